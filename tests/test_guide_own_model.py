"""The own-model guide (docs/guides/own-model.md) runs as written: its module, its training loop
with measurements, and its commands (in this process), in a fresh folder."""

from __future__ import annotations

import re
import shlex
import sys

import pytest
from conftest import TESTS, landscape_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _section_blocks() -> list[tuple[str, str]]:
    section = (TESTS.parent / "docs" / "guides" / "own-model.md").read_text()
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_sections_examples_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = _section_blocks()
    assert [kind for kind, _ in blocks] == ["python", "python", "bash"]
    (tmp_path / "mynet.py").write_text(blocks[0][1])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mynet", None)
    try:
        exec(compile(blocks[1][1], "docs/guides/own-model.md", "exec"), {"__name__": "__main__"})
        printed = capsys.readouterr().out
        assert "top eigenvalue" in printed and (tmp_path / "ckpt" / "epoch_20.pt").exists()
        for line in blocks[2][1].strip().splitlines():
            words = shlex.split(line)
            assert words[0] == "landscape"
            result = landscape_cli(*words[1:], "-q")
            assert result.returncode == 0, f"{line}\n{result.stderr}"
    finally:
        sys.modules.pop("mynet", None)
    figures = {p.name for p in (tmp_path / "results" / "mine").iterdir()}
    assert {"flatness.png", "gradnorm.png", "sharpness.png", "epoch_20-mse.png"} <= figures
