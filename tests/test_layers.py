"""The package's layers read bottom-up: each imports only the layers below it, the figures never
import torch, and no module imports itself back through others (an import circle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import landscape

PACKAGE = Path(landscape.__file__).parent
# rank of each layer: a module imports its own layer and lower ranks only. The foundation (rank 0)
# is the small modules every layer uses, the run's config, the data sets and the model builder.
RANKS = {"measures": 1, "integrations": 2, "runs": 2, "training": 3, "figures": 3, "analysis": 4,
         "cli": 5}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else "foundation"


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The landscape modules `path` imports at run time (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("landscape"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found |= {n if (PACKAGE.parent / Path(*n.split("."))).with_suffix(".py").exists()
                      or (PACKAGE.parent / Path(*n.split("."))).is_dir() else node.module
                      for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("landscape")}
    return found - {"landscape"}


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def test_every_module_imports_only_its_own_layer_and_those_below():
    wrong = []
    for module, path in MODULES.items():
        if module == "landscape.__main__":
            continue
        rank = RANKS.get(_layer(module), 0)
        for target in _imports(path, top_level_only=False):
            other = _layer(target)
            if other != _layer(module) and RANKS.get(other, 0) >= rank and other != "foundation":
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_measurements_import_no_layer_above_them():
    above = ("training", "runs", "analysis", "figures", "cli")
    for module, path in MODULES.items():
        if _layer(module) == "measures":
            assert not [t for t in _imports(path, top_level_only=False)
                        if _layer(t) in above], module


def test_no_import_circle():
    graph = {m: {t for t in _imports(p, top_level_only=True) if t in MODULES}
             for m, p in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in graph[module]:
            # a package's own __init__ is imported first by any of its modules: not a circle
            if module.startswith(target + "."):
                continue
            assert state.get(target) != "open", " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_figures_and_the_result_files_do_without_torch():
    figures = sorted(m for m in MODULES if _layer(m) == "figures") + ["landscape.results"]
    code = (f"import sys\nfor m in {figures!r}: __import__(m)\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_landscape_gives_the_public_surface_without_torch():
    code = ("import sys, landscape\nassert 'torch' not in sys.modules\n"
            "assert {'train', 'Run', 'RunConfig', 'loss_slice', 'flood'} <= set(landscape.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in landscape.__all__:
        assert getattr(landscape, name) is not None, name
