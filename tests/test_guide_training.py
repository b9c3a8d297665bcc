"""The training guide's Python examples (docs/guides/training.md, "From Python") run as written
(fewer epochs, another folder) and train with the paper's MNIST recipe."""

import re
from pathlib import Path

from landscape.runs.store import Run

GUIDE = Path(__file__).parent.parent / "docs" / "guides" / "training.md"


def api_example() -> str:
    section = GUIDE.read_text().split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_guides_python_api_trains_mnist_with_the_papers_recipe(tmp_path, monkeypatch):
    code = api_example()
    assert "epochs=20" in code and 'out="checkpoints"' in code and 'data_dir="tests/data"' in code
    code = code.replace("epochs=20", "epochs=2").replace("every:5", "every:1").replace(
        "epoch=20", "epoch=2").replace('out="checkpoints"', f"out={str(tmp_path)!r}")
    monkeypatch.chdir(GUIDE.parents[2])  # the example's data_dir is relative to the repository
    scope: dict = {}
    exec(compile(code, str(GUIDE), "exec"), scope)
    for path in scope["result"].paths:
        optim = Run(path).config.optim
        assert (optim.name, optim.lr, optim.momentum, optim.batch_size) == ("sgd", 0.1, 0.9, 128)
        assert Run(path).config.model.depth == 2 and Run(path).config.model.width == 1000
    assert scope["result"].statuses == ("complete", "complete")


def test_the_guides_generator_example_runs_and_floods(capsys):
    section = GUIDE.read_text().split("## From Python", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    assert "epochs=100" in code
    scope: dict = {}
    exec(compile(code.replace("epochs=100", "epochs=40"), str(GUIDE), "exec"), scope)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "20", "40"]
    plain_loss, flooded_loss = scope["epoch"].metrics["train_loss"].tolist()
    assert flooded_loss > plain_loss  # flooding keeps the training loss up, near b = 0.3
    assert set(scope["final_weights"]) == set(scope["epoch"].group.member_state(0))
