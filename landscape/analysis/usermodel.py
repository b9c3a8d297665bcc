"""A user's own model, data and checkpoint files, for the analyses' command line (`--model
MODULE:FACTORY --weights FILE... --data MODULE:FACTORY`).

MODULE:FACTORY follows the import convention of gunicorn and uvicorn: MODULE is imported (the
current folder is importable) and FACTORY is an attribute of it, called without arguments if it
is callable. Checkpoint files are read with torch.load(weights_only=True), which refuses any
pickle that would run code; a file holds a bare state dict, or a dict holding one under
"state_dict" or "model" (PyTorch Lightning and most trainers' layouts).
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from landscape.errors import BadInput
from landscape.measures.model import STATE_KEYS, _state_in, fit_state


def import_object(spec: str, option: str) -> Any:
    """The object MODULE:ATTR names (ATTR may be dotted); bad input if it cannot be had."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInput(f"{option} must be MODULE:NAME (e.g. mymodels:make_net), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise BadInput(f"{option}: no module named {module_name!r} (it is imported from the "
                           "current folder or the installed packages)") from None
        raise BadInput(f"{option}: importing {module_name!r} failed: {err}") from None
    except Exception as err:  # the user's module raised while importing: say what, in one line
        raise BadInput(f"{option}: importing {module_name!r} failed: {type(err).__name__}: "
                       f"{err}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BadInput(f"{option}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _made(spec: str, option: str) -> Any:
    obj = import_object(spec, option)
    if isinstance(obj, nn.Module) or not callable(obj):
        return obj
    try:
        return obj()
    except Exception as err:
        raise BadInput(f"{option}: {spec}() failed: {type(err).__name__}: {err}") from None


def user_model(spec: str) -> nn.Module:
    """The nn.Module that --model's factory returns."""
    model = _made(spec, "--model")
    if not isinstance(model, nn.Module):
        raise BadInput(f"--model: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def user_data(spec: str) -> dict[str, Any]:
    """--data's factory result as named splits: one data source is the training split; a mapping
    names its splits (train, test)."""
    data = _made(spec, "--data")
    if isinstance(data, Mapping):
        unknown = [k for k in data if k not in ("train", "test")]
        if unknown or not data:
            raise BadInput(f"--data: {spec} returned a mapping with keys {list(data)}; use "
                           "'train' and/or 'test'")
        return dict(data)
    if isinstance(data, (str, bytes, nn.Module)) or not (
            isinstance(data, (tuple, list)) or hasattr(data, "__iter__")):
        raise BadInput(f"--data: {spec} returned a {type(data).__name__}; return a pair (x, y) of "
                       "tensors, an iterable of (x, y) batches (a DataLoader), or a mapping "
                       "{'train': ..., 'test': ...} of those")
    return {"train": data}


def natural_key(path: str) -> list:
    """Sort key that orders epoch_2 before epoch_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def checkpoint_files(patterns: Sequence[str]) -> list[Path]:
    """Files named or matched by glob patterns, without repeats, in natural sort order."""
    found: list[str] = []
    for pattern in patterns:
        matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise BadInput(f"--weights: {pattern!r} matches no file")
        for match in matches:
            if os.path.isdir(match):
                raise BadInput(f"--weights: {match} is a folder: give its files, e.g. "
                               f"'{os.path.join(match, '*.pt')}'")
            if not os.path.isfile(match):
                raise BadInput(f"--weights: {match}: no such file")
            found.append(match)
    if not found:
        raise BadInput("--weights: no checkpoint files given")
    return [Path(p) for p in sorted(dict.fromkeys(found), key=natural_key)]


def number_in_name(file: Path) -> int | None:
    """The last number in a file's name (epoch_7.pt: 7, ckpt-step=300.ckpt: 300), or None."""
    numbers = re.findall(r"\d+", file.stem)
    return int(numbers[-1]) if numbers else None


def epochs_of(files: Sequence[Path]) -> list[int]:
    """Each file's epoch: the last number in its name where those are all different, else its
    position in the sorted list."""
    last = [number_in_name(f) for f in files]
    if None not in last and len(set(last)) == len(last):
        return last  # type: ignore[return-value]
    return list(range(len(files)))


def load_state(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, fitted to the model: keys as the model names them (a
    prefix such as "model." or DDP's "module." is removed where that makes them fit), shapes
    checked. Bad input names the first key that does not fit."""
    refuse_other_formats(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInput(f"{path}: {_unreadable(path, err)}") from None
    state = _state_in(content)
    if state is None:
        raise BadInput(f"{path}: holds no state dict (a mapping of names to tensors, bare or "
                       f"under one of {', '.join(STATE_KEYS)})")
    return fit_state(state, model.state_dict(), f"{path}: weights")


TORCH_SAVE = (b"PK\x03\x04", b"\x80")  # how torch.save files begin: a zip archive, or a pickle


def refuse_other_formats(path: Path) -> None:
    """Bad input naming what `path` is when it is a file of another kind that a user may take for
    weights: above all one of our run files (an analysis reads it as a run) or result files,
    which torch.load would refuse with a hint to load them unsafely."""
    import h5py

    if h5py.is_hdf5(path):
        from landscape.runs.folders import file_format
        from landscape.runs.store import FORMAT

        fmt = file_format(path)
        if fmt == FORMAT:
            raise BadInput(f"{path} is a landscape run file: pass it as a run (PATHS, without "
                           "--model/--weights/--data), not as --weights")
        what = (f"a landscape result file ({fmt})" if isinstance(fmt, str)
                and fmt.startswith("landscape-") else "an HDF5 file")
        raise BadInput(f"{path} is {what}, not a PyTorch checkpoint (a torch.save file)")
    with open(path, "rb") as f:
        head = f.read(10)
    what = ("a NumPy array file (numpy.save)" if head.startswith(b"\x93NUMPY") else
            "a safetensors file (torch.save what safetensors.torch.load_file returns)"
            if head[8:10] == b'{"' else None)
    if what:
        raise BadInput(f"{path} is {what}, not a PyTorch checkpoint (a torch.save file)")


def _unreadable(path: Path, err: Exception) -> str:
    """Why torch.load(weights_only=True) could not read `path`, in one line, without torch's
    advice to load it with weights_only=False (which runs any code the file holds)."""
    with open(path, "rb") as f:
        if not f.read(4).startswith(TORCH_SAVE):
            return "not a PyTorch checkpoint (torch.save writes a zip archive; this is none)"
    text = str(err)
    held = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if held:
        return (f"it holds an object of class {held.group(1)}, which loading would run code for "
                "(torch.load(weights_only=True) refuses); save the weights alone: torch.save("
                "model.state_dict(), FILE)")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    first = detail.group(1) if detail else (text.strip().splitlines() or [type(err).__name__])[0]
    return f"not a readable weights file ({first[:200]})"


@dataclass(frozen=True)
class UserCheckpoints:
    """A user's model, its checkpoint files (a trajectory, in natural order) and data."""

    model: nn.Module
    files: list[Path]
    epochs: list[int]
    data: dict[str, Any]
    loss: Any
    specs: dict[str, str]           # what --model, --data and --loss said

    def identity(self) -> dict:
        """What a result computed from these checkpoints depends on (loading.reuse_result)."""
        from landscape.files import digest

        return {**self.specs, "checkpoints": [str(f.resolve()) for f in self.files],
                "weights_digests": [digest(f) for f in self.files]}

    @property
    def name(self) -> str:
        """A label for the trajectory: the checkpoints' folder (or the file, for one)."""
        if len(self.files) == 1:
            return self.files[0].stem
        return self.files[0].resolve().parent.name or "checkpoints"

    def state(self, index: int) -> dict[str, torch.Tensor]:
        return load_state(self.files[index], self.model)

    def at(self, epochs: Sequence[int] | None) -> UserCheckpoints:
        """These checkpoints at `epochs` (--epochs; all for None); an epoch without one is bad
        input."""
        if epochs is None:
            return self
        missing = [e for e in epochs if e not in self.epochs]
        if missing:
            raise BadInput(f"--epochs: no checkpoint of epoch {missing[0]} among --weights "
                           f"(epochs {', '.join(map(str, self.epochs))})")
        keep = [i for i, e in enumerate(self.epochs) if e in set(epochs)]
        return replace(self, files=[self.files[i] for i in keep],
                       epochs=[self.epochs[i] for i in keep])


def open_checkpoints(model: str, weights: Sequence[str], data: str, loss: str
                     ) -> UserCheckpoints:
    """What --model, --weights, --data and --loss name, every file checked before any work."""
    module = user_model(model)
    files = checkpoint_files(weights)
    for f in files:
        load_state(f, module)
    if loss not in ("cross_entropy", "logistic") and ":" not in loss:
        raise BadInput(f"--loss must be cross_entropy, logistic or MODULE:NAME (a function "
                       f"(logits, y) -> per-sample losses), got {loss!r}")
    chosen: Any = loss if loss in ("cross_entropy", "logistic") else import_object(loss, "--loss")
    if not isinstance(chosen, str) and not callable(chosen):
        raise BadInput(f"--loss: {loss} is not callable")
    return UserCheckpoints(module, files, epochs_of(files), user_data(data), chosen,
                       {"model": model, "data": data, "loss": loss})
