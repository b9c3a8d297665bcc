"""Mode connectivity of two models of one architecture: the loss along the linear path between
them (Goodfellow et al. 2015) and its barrier (Frankle et al. 2020), and a low-loss curve fitted
between them (Garipov et al. NeurIPS 2018: a quadratic Bezier curve or a polygonal chain through
one bend).

Any nn.Module works as it is: a point of a path is a combination of two or three state dicts,
evaluated like a slice's points (slices.evaluate_combinations), and the curve's bend is trained
through torch.func.functional_call, where Garipov et al.'s code rewrites every layer curve-aware.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss, per_sample_loss
from landscape.measures.filternorm import parameters_of
from landscape.measures.model import Tensors, _dtype, _prepared, check_data, fit_state
from landscape.measures.options import PATH_BN, ConnectOptions
from landscape.measures.slices import evaluate_combinations
from landscape.measures.sources import LoaderSource, Source, TensorSource, as_sources
from landscape.progress import progress_bar

DEFAULT = ConnectOptions()  # the defaults, in one place for the API and the command line


def barrier(t: np.ndarray, values: np.ndarray) -> float:
    """The barrier height of `values` (a loss, or an error) along a path from a (t = 0) to b
    (t = 1): max_t [v(t) - ((1 - t) v(0) + t v(1))], the largest rise above the chord between the
    two models' values: the barrier of linear mode connectivity (Frankle et al. 2020, Sec. 2) in
    the form Entezari et al. 2022 write it. Frankle et al. state the rise above the mean of the
    two endpoints' values, the same number where those agree. 0 where the path never rises above
    the chord; NaN where a value is (accuracy of labels that are no classes)."""
    t, values = np.asarray(t, dtype=float), np.asarray(values, dtype=float)
    if np.isnan(values).any():
        return float("nan")
    return float(np.max(values - ((1 - t) * values[0] + t * values[-1])))


@dataclass(frozen=True)
class LossPath:
    """Loss and accuracy along a path from model a (t = 0) to model b (t = 1).

    `metrics`: "<split>_loss" and "<split>_acc" [len(t)] for each data split ("train" when one
    data source was given). `barriers`: "<split>_loss" and "<split>_error" (error = 1 -
    accuracy) barrier heights (connectivity.barrier)."""

    t: np.ndarray
    metrics: dict[str, np.ndarray]
    barriers: dict[str, float]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.metrics[key]

    @property
    def barrier(self) -> float:
        """The barrier of the training loss (of the first split where none is called train)."""
        return self.barriers[f"{self._split}_loss"]

    @property
    def error_barrier(self) -> float:
        """The barrier of the training error (1 - accuracy)."""
        return self.barriers[f"{self._split}_error"]

    @property
    def _split(self) -> str:
        splits = [k.removesuffix("_loss") for k in self.metrics if k.endswith("_loss")]
        return "train" if "train" in splits else splits[0]


def interpolate(model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                data: Any, *, points: int = DEFAULT.points, bn: str = DEFAULT.bn,
                loss: Loss = "cross_entropy", device: torch.device | str | None = None,
                stack: int = 1) -> LossPath:
    """Loss and accuracy at (1 - t) a + t b for `points` values of t evenly spaced in [0, 1]
    (the linear path of Goodfellow et al. 2015) on every data split, with the barrier heights
    (LossPath.barrier: of the training loss; .error_barrier: of the training error; .barriers:
    of every split's loss and error).

    a, b: state dicts of `model`'s architecture (the module's own weights are not used); `data`:
    a pair (x, y), a DataLoader, or a mapping of split name to those ({"train": ..., "test":
    ...}). BatchNorm (bn): "recompute" re-estimates the running statistics at each point from the
    "train" split (train mode, a cumulative average over its batches, as Garipov et al. and
    Frankle et al. evaluate interpolated networks), "keep" interpolates the two models' running
    statistics like the weights. Models are evaluated in eval mode. `stack`: points evaluated at
    once under vmap (pays on GPUs; 1 on CPUs; BatchNorm re-estimation goes point by point)."""
    loss = check_loss(loss)
    t = _grid(points)
    with _two_models(model, a, b, device) as (template, start, end):
        sources = _sources(template, start, data, loss, bn)
        return _along(template, [start, end], np.stack([1 - t, t], 1), t, sources, loss, bn,
                      stack)


@dataclass(frozen=True)
class Curve:
    """A curve from model a (t = 0) to model b (t = 1) through a trained bend (Garipov et al.
    2018): a quadratic Bezier curve phi(t) = (1 - t)^2 a + 2t(1 - t) bend + t^2 b, or a polygonal
    chain a -> bend -> b (bend at t = 1/2).

    `path`: loss and accuracy along the curve, with its barriers (LossPath); `objective`: each
    training epoch's mean loss over its mini-batches, at their random t. `a`, `bend`, `b`: state
    dicts (the bend's buffers are the mean of a's and b's)."""

    kind: str
    a: Tensors = field(repr=False)
    bend: Tensors = field(repr=False)
    b: Tensors = field(repr=False)
    path: LossPath
    objective: np.ndarray
    model: nn.Module = field(repr=False)
    loss: Loss = field(repr=False)

    def point(self, t: float) -> Tensors:
        """The state dict phi(t): a at t = 0 and b at t = 1 exactly. Buffers are combined like the
        weights (integer ones taken from the anchor of the largest weight); re-estimate BatchNorm
        statistics before evaluating it (evaluate does)."""
        if not 0 <= t <= 1:
            raise BadInput(f"t must be in [0, 1], got {t}")
        w = coefficients(self.kind, np.array([float(t)]))[0].tolist()
        anchors = (self.a, self.bend, self.b)
        out = {}
        for name, value in self.a.items():
            if value.is_floating_point():
                out[name] = value.clone().mul_(w[0]) if w[0] != 1 else value.clone()
                out[name].add_(self.bend[name], alpha=w[1]).add_(self.b[name], alpha=w[2])
            else:
                out[name] = anchors[int(np.argmax(w))][name].clone()
        return out

    def evaluate(self, data: Any, *, points: int = DEFAULT.points, bn: str = DEFAULT.bn,
                 stack: int = 1) -> LossPath:
        """Loss and accuracy along the curve at `points` values of t evenly spaced in [0, 1], as
        interpolate evaluates the linear path (bn="recompute": statistics re-estimated at each t,
        as Garipov et al. evaluate their curves)."""
        t = _grid(points)
        sources = _sources(self.model, self.a, data, self.loss, bn)
        return _along(self.model, [self.a, self.bend, self.b], coefficients(self.kind, t), t,
                      sources, self.loss, bn, stack)


def coefficients(kind: str, t: np.ndarray) -> np.ndarray:
    """The weights [len(t), 3] of a, the bend and b at each t: Bezier ((1-t)^2, 2t(1-t), t^2);
    polygonal chain (1 - 2t, 2t, 0) up to t = 1/2, then (0, 2 - 2t, 2t - 1)."""
    t = np.asarray(t, dtype=float)
    if kind == "bezier":
        return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t ** 2], 1)
    if kind == "polychain":
        first = t < 0.5
        return np.stack([np.where(first, 1 - 2 * t, 0.0), np.where(first, 2 * t, 2 - 2 * t),
                         np.where(first, 0.0, 2 * t - 1)], 1)
    raise BadInput(f"unknown curve kind {kind!r}; choose bezier or polychain")


def fit_curve(model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
              data: Any, *, kind: str = "bezier", epochs: int = DEFAULT.curve_epochs,
              lr: float = DEFAULT.lr, momentum: float = DEFAULT.momentum,
              weight_decay: float = DEFAULT.weight_decay, batch_size: int = DEFAULT.batch_size,
              seed: int = DEFAULT.seed, points: int = DEFAULT.points, bn: str = DEFAULT.bn,
              loss: Loss = "cross_entropy", device: torch.device | str | None = None,
              stack: int = 1, progress: bool = False) -> Curve:
    """A low-loss curve between two models (Garipov et al. 2018, Sec. 3): the bend theta starts
    at the midpoint (a + b) / 2 and is trained by SGD (`lr`, `momentum`, `weight_decay` on theta)
    on E_{t ~ U[0, 1]} L(phi_theta(t)), one t drawn per mini-batch, for `epochs` passes over the
    "train" split (the data as interpolate takes them; tensors are shuffled each epoch, in
    mini-batches of `batch_size` rows; an iterable too large to keep in memory gives its own
    batches). The model is called through torch.func.functional_call in train mode (BatchNorm on
    batch statistics, dropout active); `seed` draws the shuffles, the t's and dropout, leaving
    torch's global generator as it was. The curve is then evaluated at `points` values of t as
    interpolate evaluates the line (Curve.path; bn="recompute" re-estimates BatchNorm statistics
    at each t, as Garipov et al. do)."""
    loss = check_loss(loss)
    ConnectOptions(points=points, bn=bn, curve=kind, curve_epochs=epochs, lr=lr,
                   momentum=momentum, weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    with _two_models(model, a, b, device) as (template, start, end):
        sources = _sources(template, start, data, loss, bn)
        if "train" not in sources:
            raise BadInput("fit_curve trains on a 'train' data split; the mapping has "
                           f"{', '.join(sources)}")
        bend, objective = _train_bend(template, start, end, sources["train"], kind, loss,
                                      epochs=epochs, lr=lr, momentum=momentum,
                                      weight_decay=weight_decay, batch_size=batch_size,
                                      seed=seed, progress=progress)
        t = _grid(points)
        path = _along(template, [start, bend, end], coefficients(kind, t), t, sources, loss, bn,
                      stack)
    return Curve(kind, start, bend, end, path, objective, template, loss)


def _train_bend(template: nn.Module, a: Tensors, b: Tensors, source: Source, kind: str,
                loss: Loss, *, epochs: int, lr: float, momentum: float, weight_decay: float,
                batch_size: int, seed: int, progress: bool) -> tuple[Tensors, np.ndarray]:
    """The trained bend (a whole state dict) and each epoch's mean training loss."""
    a_params, a_buffers = parameters_of(template, a)
    b_params, b_buffers = parameters_of(template, b)
    theta = {n: ((a_params[n] + b_params[n]) / 2).detach().clone().requires_grad_()
             for n in a_params}
    # a training-mode BatchNorm updates running statistics in place: into this scratch copy
    scratch = {n: v.clone() for n, v in a_buffers.items()}
    optimizer = torch.optim.SGD(theta.values(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    batch_norm = _has_batch_norm(template)
    if isinstance(source, LoaderSource) and source.kept is None:
        # one pass keeps a DataLoader's rows where they fit: every epoch then shuffles them
        for _ in source.batches(batch_size):
            pass
    objective = []
    template.train()
    device = next(iter(theta.values())).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            progress_bar(range(epochs), enabled=progress, label="curve") as bar:
        torch.manual_seed(seed)  # dropout's draws
        for _ in bar:
            total, count = 0.0, 0
            for x, y in _minibatches(source, batch_size, generator):
                if batch_norm and len(y) < 2:  # train-mode BatchNorm needs two rows
                    continue
                w = coefficients(kind, torch.rand((), generator=generator).numpy()[None])[0]
                phi = {n: w[0] * a_params[n] + w[1] * theta[n] + w[2] * b_params[n]
                       for n in theta}
                batch_loss = per_sample_loss(functional_call(template, {**phi, **scratch}, (x,)),
                                             y, loss).mean()
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                total, count = total + float(batch_loss.detach()) * len(y), count + len(y)
            objective.append(total / max(count, 1))
    template.eval()
    bend = {n: p.detach() for n, p in theta.items()}
    for n, value in a_buffers.items():  # mean running statistics: used only with bn="keep"
        bend[n] = (value + b_buffers[n]) / 2 if value.is_floating_point() else value.clone()
    return {n: bend[n] for n in a}, np.asarray(objective)


def _minibatches(source: Source, rows: int, generator: torch.Generator
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's mini-batches: rows of in-memory data in a fresh random order, `rows` at a time;
    an iterable's own batches where it is too large to be kept (sources.LoaderSource)."""
    tensors = source.kept if isinstance(source, LoaderSource) else source
    if not isinstance(tensors, TensorSource):
        yield from source.batches(rows)
        return
    order = torch.randperm(len(tensors), generator=generator).to(tensors.y.device)
    for start in range(0, len(order), rows):
        where = order[start:start + rows]
        x = tensors.split.inputs(where) if tensors.split is not None else tensors.x[where]
        yield x, tensors.y[where]


@contextlib.contextmanager
def _two_models(model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                device: torch.device | str | None) -> Iterator[tuple[nn.Module, Tensors, Tensors]]:
    """The module to call and the two state dicts fitted to it, on the device; the user's module
    gets its train/eval flags back afterwards."""
    if not isinstance(model, nn.Module):
        raise BadInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    expected = model.state_dict()
    a, b = fit_state(a, expected, "the weights a"), fit_state(b, expected, "the weights b")
    with _prepared(model, a, device) as (template, a):
        first = next(iter(a.values()))
        yield template, a, {k: v.detach().to(first.device) for k, v in b.items()}


def _sources(template: nn.Module, state: Tensors, data: Any, loss: Loss, bn: str
             ) -> dict[str, Source]:
    if bn not in PATH_BN:
        raise BadInput(f"unknown bn {bn!r}; choose recompute or keep")
    first = next(iter(state.values()))
    sources = as_sources(data, device=first.device, dtype=_dtype(state))
    check_data(template, state, sources, loss)
    if bn == "recompute" and _has_batch_norm(template) and "train" not in sources:
        raise BadInput("bn='recompute' re-estimates BatchNorm statistics from a 'train' data "
                       f"split; the mapping has {', '.join(sources)} (or pass bn='keep')")
    return sources


def _along(template: nn.Module, anchors: list[Tensors], weights: np.ndarray, t: np.ndarray,
           sources: Mapping[str, Source], loss: Loss, bn: str, stack: int) -> LossPath:
    """A LossPath at the points sum_j weights[p, j] anchors[j]."""
    recompute = bn == "recompute" and _has_batch_norm(template)
    values = evaluate_combinations(template, anchors, weights, sources, loss, members=stack,
                                   bn_stats="recompute" if recompute else "combine")
    barriers = {}
    for key, value in values.items():
        split, metric = key.rsplit("_", 1)
        barriers[f"{split}_{'loss' if metric == 'loss' else 'error'}"] = barrier(
            t, value if metric == "loss" else 1 - value)
    return LossPath(t, values, barriers)


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _grid(points: int) -> np.ndarray:
    ConnectOptions(points=points)
    return np.linspace(0.0, 1.0, points)
