"""Landscape measures tracked during a user's own training loop (issue 25, item 2):

    tracker = landscape.Tracker(model, (x, y), measures=("top_eigenvalue",), every=10, samples=512)
    for batch in loader:
        ...; optimizer.step()
        tracker.step(optimizer)          # measures on every 10th call, else returns None
    tracker.to_csv("sharpness.csv")

Each value is the measure's own function (hessian.py, gradients.py, worstcase.py) called on the
model's current weights and the tracked data, so it equals what that function gives afterwards
on the saved weights with the same data. `samples` fixes the data once: the cost of a step is
bounded and the values of different steps are measured on the same rows.

With the optimizer, the edge-of-stability reference of Cohen et al. is recorded too:
`threshold`, the sharpness above which the optimizer's iteration on the local quadratic
diverges, and for Adam the `preconditioned_sharpness` to compare with it (Tracker.step).
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.files import write_text
from landscape.flooding import Loss, check_loss
from landscape.measures.gradients import gradient_amplitude
from landscape.measures.hessian import hessian_top_eigenvalue, hessian_trace
from landscape.measures.operators import HessianOperator, Operator
from landscape.measures.options import SharpnessOptions
from landscape.measures.sources import LoaderSource, TensorSource, as_source
from landscape.measures.spectrum import top_eigenvalue
from landscape.measures.worstcase import worst_case_sharpness
from landscape.results import write_result

TRACKING = "tracking"  # the result file's kind: format "landscape-tracking"
# name -> (the measure's function, its number)
MEASURES: dict[str, tuple[Callable[..., Any], Callable[[Any], float]]] = {
    "top_eigenvalue": (hessian_top_eigenvalue, float),
    "trace": (hessian_trace, lambda estimate: estimate.value),
    "gradient_amplitude": (gradient_amplitude, float),
    "worst_case_sharpness": (worst_case_sharpness, lambda sharpness: sharpness.value),
}
PRECONDITIONED = "preconditioned_sharpness"  # options of its Lanczos iteration under this name
POWER_OPTIONS = ("iterations", "tolerance", "seed")
FIXED = ("model", "data", "loss", "params", "device")  # arguments the tracker gives every measure


class Tracker:
    """Landscape measures of `model` on `data` every `every` calls of `.step()`.

    data: as the measures take it (a pair of tensors x [n, ...], y [n], an in-memory Split, a
    DataLoader). samples: N rows fixed at construction and measured every time: for tensors and
    splits rows torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:N], for any
    other iterable the first N rows of one pass; kept as the pair `.data`. None: all of `data`
    at every measurement (a DataLoader is iterated each time).
    measures: names from MEASURES. options: {measure name: keyword arguments of its function},
    e.g. {"top_eigenvalue": {"iterations": 20}, "trace": {"probes": 10}}, and under
    "preconditioned_sharpness" its Lanczos iteration's iterations, tolerance and seed; `seed` is
    every measure's seed unless its options give one.
    `.history`: columns {"step": [...], name: [...]}, one row per measurement (NaN where a value
    was not measured at that step); `.seconds`: the time spent measuring.
    """

    def __init__(self, model: nn.Module, data: Any, *,
                 measures: str | Sequence[str] = ("top_eigenvalue", "trace",
                                                  "gradient_amplitude"),
                 every: int = 1, samples: int | None = None, loss: Loss = "cross_entropy",
                 seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        names = (measures,) if isinstance(measures, str) else tuple(measures)
        unknown = [n for n in names if n not in MEASURES]
        if unknown or not names or len(set(names)) != len(names):
            raise BadInput(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}"
                           if unknown else f"measures must be one or more distinct names, got {list(names)}")
        if not isinstance(every, int) or every < 1:
            raise BadInput(f"every must be an integer >= 1, got {every!r}")
        if samples is not None and (not isinstance(samples, int) or samples < 1):
            raise BadInput(f"samples must be an integer >= 1 or None, got {samples!r}")
        if not isinstance(seed, int) or seed < 0:
            raise BadInput(f"seed must be an integer >= 0, got {seed!r}")
        if not isinstance(model, nn.Module):
            raise BadInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model, self.measures, self.every, self.samples = model, names, every, samples
        self.loss, self.seed = check_loss(loss), seed
        self.options = checked_options(names, dict(options or {}), seed)
        self.data = data if samples is None else fixed_rows(data, samples, seed)
        self.calls = 0
        self.seconds = 0.0
        self.history: dict[str, list] = {"step": []}

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float] | None:
        """Count a call (the first is step 1); on every `every`-th (steps every, 2 every, ...)
        measure the model's current weights and return {name: value}, else None.

        With the optimizer (call after optimizer.step()), also `threshold`, the edge of
        stability, where gradient descent on the local quadratic diverges: for SGD 2 / lr
        (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge
        of stability"), with heavy-ball momentum beta (2 + 2 beta) / lr and with Nesterov's
        (2 + 2 beta) / (lr (1 + 2 beta)) (their treatment of momentum; lr times 1 - dampening);
        for Adam and AdamW (2 + 2 beta1) / ((1 - beta1) lr), 38 / lr at beta1 = 0.9, and the
        `preconditioned_sharpness` lambda_1(P^-1 H) that equilibrates at it (Cohen et al. 2022,
        "Adaptive gradient methods at the edge of stability"). Their P writes Adam's step as
        theta <- theta - lr P^-1 m, m the first moment without bias correction, so that
        P = (1 - beta1^t) (diag(sqrt(v / (1 - beta2^t))) + eps): lr is not in P, v is the second
        moment (max_exp_avg_sq with amsgrad) and t the step count of the optimizer's last step.
        H is the Hessian of the measured loss alone (L2 weight decay's wd I is not in it)."""
        self.calls += 1
        if self.calls % self.every:
            return None
        start = time.perf_counter()
        values = measure(self.model, self.data, self.measures, self.options, loss=self.loss)
        if optimizer is not None:
            values["threshold"] = threshold(optimizer)
            if adam(optimizer):
                values[PRECONDITIONED] = preconditioned_sharpness(
                    self.model, self.data, adam_inverse(self.model, optimizer), loss=self.loss,
                    **self.options[PRECONDITIONED])
        self.seconds += time.perf_counter() - start
        self._record(self.calls, values)
        return values

    def _record(self, step: int, values: Mapping[str, float]) -> None:
        rows = len(self.history["step"])
        for name in values:  # a value first measured now: NaN at the earlier steps
            self.history.setdefault(name, [math.nan] * rows)
        self.history["step"].append(step)
        for name, column in self.history.items():
            if name != "step":
                column.append(float(values.get(name, math.nan)))

    def to_csv(self, path: str | Path) -> Path:
        """The history as CSV (a header of column names, one row per measurement; floats written
        as Python's repr, which reads back exactly), replaced atomically."""
        path = _writable(path)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.history)
        writer.writerows(zip(*(map(repr, column) for column in self.history.values())))
        write_text(path, out.getvalue())
        return path

    def to_hdf5(self, path: str | Path) -> Path:
        """The history as a result file (results.write_result, kind "tracking"): one dataset per
        column, what determines the values as attributes; replaced atomically."""
        loss = self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__",
                                                                      "function")
        arrays = {name: np.asarray(column, dtype=np.int64 if name == "step" else np.float64)
                  for name, column in self.history.items()}
        return write_result(_writable(path), kind=TRACKING, arrays=arrays, attrs={
            "measures": list(self.measures), "every": self.every, "samples": self.samples,
            "seed": self.seed, "loss": loss, "options": self.options, "seconds": self.seconds})


def measure(model: nn.Module, data: Any, names: Sequence[str],
            options: Mapping[str, Mapping[str, Any]], *, loss: Loss,
            params: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """{name: value} of the measures `names` (MEASURES) of the model (at `params`, a state dict,
    if given) on `data`, each its own function with its `options` (checked_options): what
    Tracker.step and the trainer (training/tracking.py) record."""
    return {name: MEASURES[name][1](MEASURES[name][0](model, data, loss=loss, params=params,
                                                      **options[name])) for name in names}


def adam(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer is Adam's, whose preconditioned sharpness is tracked."""
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def threshold(optimizer: torch.optim.Optimizer) -> float:
    """The edge of stability of the optimizer's current settings (Tracker.step's docstring)."""
    groups = optimizer.param_groups
    if adam(optimizer):
        lr, beta1 = _one(groups, "lr"), _one(groups, "betas")[0]
        return (2 + 2 * beta1) / ((1 - beta1) * lr)
    if isinstance(optimizer, torch.optim.SGD):
        beta = _one(groups, "momentum")
        lr = _one(groups, "lr") * (1 - _one(groups, "dampening") if beta else 1)
        nesterov = _one(groups, "nesterov")
        return (2 + 2 * beta) / (lr * (1 + 2 * beta if nesterov else 1))
    raise BadInput(f"the edge of stability is known for SGD, Adam and AdamW, not "
                   f"{type(optimizer).__name__}; call step() without the optimizer")


def fixed_rows(data: Any, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [samples, ...], y [samples]): seeded rows of tensors or a split, the first rows of one
    pass of any other iterable (Tracker's docstring)."""
    first = data[0] if isinstance(data, (tuple, list)) and data else None
    device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    source = as_source(data, device=device, dtype=None)
    if isinstance(source, TensorSource):
        if samples > len(source):
            raise BadInput(f"samples must be at most the data's {len(source)} rows, got {samples}")
        rows = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:samples]
        x = source.split.inputs(rows) if source.split is not None else source.x[rows]
        return x, source.y[rows.to(source.y.device)]
    assert isinstance(source, LoaderSource)
    xs, ys, held = [], [], 0
    for x, y in source.batches(samples):
        xs.append(x)
        ys.append(y)
        held += len(y)
        if held >= samples:
            return torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    raise BadInput(f"samples must be at most the data's {held} rows, got {samples}")


def adam_inverse(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """{parameter name: P^-1} of an Adam or AdamW optimizer's last step (Tracker.step's
    docstring); zero for a parameter it does not move (not in it, or never given a gradient)."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    inverse, moved = {}, 0
    for name, p in model.named_parameters():
        group, state = group_of.get(id(p)), optimizer.state.get(p, {})
        if group is None or "exp_avg_sq" not in state:
            inverse[name] = torch.zeros_like(p, dtype=p.dtype).detach()
            continue
        inverse[name] = step_inverse(group, state)
        moved += 1
    if not moved:
        raise BadInput("the optimizer has taken no step on the model's parameters: call "
                       "tracker.step(optimizer) after optimizer.step(), with the model's optimizer")
    return inverse


def step_inverse(group: Mapping[str, Any], state: Mapping[str, Any]) -> torch.Tensor:
    """P^-1 of one parameter (or of stacked members' [K, ...]) from its Adam state and group
    (Tracker.step's docstring): 1 / ((1 - beta1^t) (sqrt(v / (1 - beta2^t)) + eps))."""
    beta1, beta2 = group["betas"]
    t = float(state["step"])
    v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
    return 1 / ((1 - beta1 ** t) * ((v / (1 - beta2 ** t)).sqrt() + group["eps"]))


def preconditioned_sharpness(model: nn.Module, data: Any, inverse: Mapping[str, torch.Tensor], *,
                             loss: Loss = "cross_entropy",
                             params: Mapping[str, torch.Tensor] | None = None,
                             iterations: int = 100, tolerance: float = 1e-4, seed: int = 0
                             ) -> float:
    """The eigenvalue of largest magnitude of D H, D = diag(`inverse`) >= 0 ({parameter name:
    tensor}), H the Hessian of the mean loss over `data` (eval mode) at the model's weights (or
    `params`): Lanczos on the symmetric D^1/2 H D^1/2, which has the same eigenvalues,
    from the seeded Gaussian start and with the stopping rule of hessian_top_eigenvalue (which
    it equals for D = I, up to rounding)."""
    SharpnessOptions(iterations=iterations, tolerance=tolerance, seed=seed)  # validates
    hessian = HessianOperator(model, data, loss=loss, params=params)
    root = torch.cat([inverse[k].reshape(-1) for k in hessian.params]).to(
        hessian.device, hessian.dtype).sqrt()                                       # [N]
    scaled = Operator(hessian.params, lambda v: root * hessian.matmat(root * v))
    return top_eigenvalue(scaled, iterations=iterations, tolerance=tolerance, seed=seed)[0]


def checked_options(names: Sequence[str], options: dict[str, Mapping[str, Any]],
                    seed: int) -> dict[str, dict[str, Any]]:
    """Every measure's keyword arguments, with `seed` where the function takes one; bad input
    names an unknown measure or argument."""
    for name, given in options.items():
        if name != PRECONDITIONED and name not in names:
            raise BadInput(f"options for {name!r}, which is not tracked; the measures are "
                           f"{', '.join(names)} (and {PRECONDITIONED} with an Adam optimizer)")
        if not isinstance(given, Mapping):
            raise BadInput(f"options for {name!r} must be a dict of keyword arguments, got "
                           f"{type(given).__name__}")
        allowed = POWER_OPTIONS if name == PRECONDITIONED else [
            k for k, p in inspect.signature(MEASURES[name][0]).parameters.items()
            if p.kind == p.KEYWORD_ONLY and k not in FIXED]
        wrong = [k for k in given if k not in allowed]
        if wrong:
            raise BadInput(f"{name} takes no option {wrong[0]!r}; it takes {', '.join(allowed)}")
    out = {}
    for name in (*names, PRECONDITIONED):
        takes_seed = name == PRECONDITIONED or "seed" in inspect.signature(
            MEASURES[name][0]).parameters
        out[name] = {**({"seed": seed} if takes_seed else {}), **options.get(name, {})}
    return out


def _one(groups: Sequence[Mapping[str, Any]], key: str) -> Any:
    """The setting `key` that every parameter group shares (a threshold needs one lr)."""
    values = {str(g[key]) for g in groups}
    if len(values) > 1:
        raise BadInput(f"the optimizer's parameter groups have different {key} ({', '.join(values)}"
                       "); the edge of stability is defined for one")
    value = groups[0][key]
    return float(value) if isinstance(value, torch.Tensor) else value


def _writable(path: str | Path) -> Path:
    """`path` unless it is a folder or lies under a file (one line of bad input); other OS
    errors come from files.temporary."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"cannot write {path}: it is a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(f"cannot write {path}: {parent} is not a folder")
            break
    return path
