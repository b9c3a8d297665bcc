"""Every script in examples/ runs as a user runs it (in a fresh folder, the figure saved there) and
shows what its text says it shows."""

from __future__ import annotations

import runpy
from pathlib import Path

import matplotlib
import pytest
from conftest import TESTS

EXAMPLES = sorted((TESTS.parent / "examples").glob("*.py"))
pytestmark = pytest.mark.usefixtures("one_thread")


def _run(path: Path, folder: Path, monkeypatch) -> dict:
    matplotlib.use("Agg")
    monkeypatch.chdir(folder)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    return runpy.run_path(str(path), run_name="__main__")


def test_there_are_enough_examples_each_with_a_gallery_header():
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        title, underline = path.read_text().split('"""')[1].strip().splitlines()[:2]
        assert set(underline) == {"="} and len(underline) == len(title), path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_draws_its_figure(path, tmp_path, monkeypatch):
    scope = _run(path, tmp_path, monkeypatch)
    assert list(tmp_path.glob("*.png")), f"{path.name} saved no figure"
    if path.stem == "plot_flooding_loop":
        plain, flooded = scope["curves"][0.0][0][-1], scope["curves"][0.3][0][-1]
        assert plain < 0.05 and abs(flooded - 0.3) < 0.05  # memorized vs floating at b
        assert scope["curves"][0.3][1][-1] < scope["curves"][0.0][1][-1]  # lower test loss
    if path.stem == "plot_theorem1":
        assert scope["check"].holds
