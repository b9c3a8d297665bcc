"""The README and the documentation site: the README stays short and its examples run as written
(the CLI tour on smaller sizes), every relative link of the README and the docs points to a file,
and, where the docs extra is installed, `mkdocs build --strict` passes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import TESTS, landscape_cli

ROOT = TESTS.parent
README = ROOT / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 150


def test_the_readme_python_tour_runs(capsys):
    code = _blocks("python")[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["line"]["train_loss"].shape == (21,)
    assert "train_loss" in scope["line"].metrics and capsys.readouterr().out


def test_the_readme_cli_tour_runs_in_a_fresh_folder(tmp_path):
    """The tour as written, on a narrower model for fewer epochs: each command must succeed, and the
    last draws every section of the paper."""
    lines = [line.split("  #")[0] for line in _blocks("bash")[1].strip().splitlines()]
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "landscape"
        if words[1] == "train":
            words = [w.replace("100", "4") for w in words] + ["--width", "16", "--depth", "2"]
        if words[1] == "mse":
            words += ["--samples", "200"]
        quiet = ["-q"] if words[1] in ("train", "flatness", "gradnorm", "mse") else []
        result = landscape_cli(*words[1:], *quiet, cwd=tmp_path)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"fig2_learning_curves.png", "fig3_memorization.png", "fig4_gradients.png",
            "thm1_mse.png"} <= figures and any(f.startswith("fig5_flatness") for f in figures)


def test_every_relative_link_points_to_a_file():
    broken = []
    for page in [README, *(ROOT / "docs").rglob("*.md")]:
        if "generated" in page.parts:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith(("#", "generated/")):
                continue  # addresses, anchors, and the gallery's pages, which the build makes
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs_gallery", reason="the docs extra: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
