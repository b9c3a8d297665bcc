"""The mean loss over data as a function of some of a model's parameters: what the curvature
operators (operators.py, fisher.py) differentiate, with the data as users have it.

A batch is either a pair (x, y), as sources.py gives tensors, splits and DataLoaders of pairs
(the model is called as model(x), a named loss or a callable (logits, y) scores it; a sample's
token labels [T] score as their mean, as a dict batch's do), or a dict of tensors such as
{"input_ids": ..., "labels": ...}. A dict's model inputs are `inputs(batch)` (a tuple of
positional arguments or a dict of keyword arguments): by default its one non-label entry
as the argument, else every non-label entry by name; a named loss scores the output against the
label entry, and a callable loss takes (output, batch) and returns one loss per sample [m] (a
sequence model's per-token losses averaged within each sample, as the user decides).
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss, per_sample_loss, token_means
from landscape.measures.filternorm import parameters_of
from landscape.measures.model import (
    Tensors,
    _dtype,
    _first_line,
    _prepared,
    check_data,
    check_labels,
)
from landscape.measures.sources import KeptPasses, Source, _saveable, _to, as_source

Batch = Any  # (x, y) or {name: tensor}
Inputs = Callable[[Mapping[str, torch.Tensor]], Union[tuple, dict]]
Wrt = Union[Sequence[str], Callable[[str], bool], None]
LABEL_KEYS = ("labels", "label", "y", "targets", "target")


class DictBatches(KeptPasses):
    """An iterable of {name: tensor} batches on `device`, floating tensors in `dtype`; after a
    whole pass that holds at most KEEP_NUMBERS numbers later passes replay it (every product
    then sees the same rows, and a DataLoader's collation is paid once). `rows` does not apply:
    a loader keeps its own batch size."""

    def batches(self, rows: int) -> Iterator[dict[str, torch.Tensor]]:
        yield from self.kept if self.kept is not None else self._passing()

    def _convert(self, batch: Any) -> dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise BadInput(f"a batch of dicts was followed by a {type(batch).__name__}")
        return {k: _to(v, self.device, self.dtype) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _kept(self, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [tree_map(lambda t: _saveable(t) if isinstance(t, torch.Tensor) else t, batch)
                for batch in batches]


@dataclasses.dataclass(frozen=True)
class Objective:
    """The model (its module, every parameter theta, its buffers, eval mode), the data, the
    loss, and the parameters differentiated (`wrt`, names in the model's order)."""

    template: nn.Module
    theta: Tensors
    buffers: Tensors
    source: Source | DictBatches
    loss: Loss | Callable[[Any, Batch], torch.Tensor]
    wrt: tuple[str, ...]
    inputs: Inputs | None = None

    @property
    def params(self) -> Tensors:
        """The differentiated parameters {name: tensor}: the operators' flat layout."""
        return {k: self.theta[k] for k in self.wrt}

    def restricted(self, names: Sequence[str]) -> Objective:
        """The same loss differentiated by `names` only."""
        return dataclasses.replace(self, wrt=tuple(k for k in self.theta if k in set(names)))

    def batches(self, rows: int) -> Iterator[Batch]:
        return self.source.batches(rows)

    def losses(self, chosen: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """Per-sample losses [m] with the parameters `chosen` in place of theta's."""
        return self.scored(self.output(chosen, batch), batch)

    def output(self, chosen: Mapping[str, torch.Tensor], batch: Batch) -> Any:
        state = {**self.theta, **chosen, **self.buffers}
        with AffineBatchNorm() if _has_batchnorm(self.template) else contextlib.nullcontext():
            if not isinstance(batch, Mapping):
                return functional_call(self.template, state, (batch[0],))
            given = (self.inputs or default_inputs)(batch)
            if isinstance(given, Mapping):
                return functional_call(self.template, state, (), dict(given))
            return functional_call(self.template, state, tuple(given))

    def scored(self, output: Any, batch: Batch) -> torch.Tensor:
        """Per-sample losses [m] of a model output on its batch."""
        if isinstance(batch, Mapping) and callable(self.loss):
            return self.loss(output, batch)
        labels = batch[label_key(batch)] if isinstance(batch, Mapping) else batch[1]
        # a sequence's tokens (labels [m, T]): their mean, for pairs as for dict batches
        return token_means(per_sample_loss(output, labels, self.loss))


AFFINE_BATCHNORM = True  # off only to measure what it saves (benchmarks/batchnorm.py)
_BATCHNORM: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _has_batchnorm(template: nn.Module) -> bool:
    """Whether AffineBatchNorm is worth its mode: a mode sees every torch call of a forward (an
    MLP's top eigenvalue 3.6% slower with it), so only a model with batch norm layers runs
    under it; a functional F.batch_norm elsewhere gets torch's own second derivative."""
    if template not in _BATCHNORM:
        _BATCHNORM[template] = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                   for m in template.modules())
    return AFFINE_BATCHNORM and _BATCHNORM[template]


class AffineBatchNorm(TorchFunctionMode):
    """BatchNorm in eval mode as its affine map x * s + (b - mean s), s = w / sqrt(var + eps):
    the same function of the parameters (torch's eval kernel computes it so), whose first and
    second derivatives are a few elementwise products, where autograd differentiates batch
    norm's backward by its general formula for batch statistics (benchmarks/RESULTS.md: 1.21x
    a Hessian product of a CNN with BatchNorm). Batch statistics (training mode, or no running
    statistics) go to torch unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.batch_norm:
            return func(*args, **kwargs)
        given = dict(zip(("input", "running_mean", "running_var", "weight", "bias", "training",
                          "momentum", "eps"), args), **kwargs)
        if given.get("training", False) or given["running_mean"] is None:
            return func(*args, **kwargs)
        x = given["input"]
        scale = torch.rsqrt(given["running_var"] + given.get("eps", 1e-5))
        if given.get("weight") is not None:
            scale = scale * given["weight"]
        shift = -given["running_mean"] * scale
        if given.get("bias") is not None:
            shift = shift + given["bias"]
        shape = (1, -1) + (1,) * (x.dim() - 2)  # statistics kept in float32 for a half model:
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)  # its dtype


def rows_in(batch: Batch) -> int:
    """The samples a batch holds: the length of its first tensor."""
    return len(next(t for t in tree_flatten(batch)[0] if isinstance(t, torch.Tensor)))


def rows_of(batch: Batch, rows: slice) -> Batch:
    """The batch's rows `rows`: each of its tensors sliced, anything else as it is."""
    return tree_map(lambda t: t[rows] if isinstance(t, torch.Tensor) else t, batch)


def label_key(batch: Mapping[str, Any]) -> str:
    key = next((k for k in LABEL_KEYS if k in batch), None)
    if key is None:
        raise BadInput(f"a dict batch needs its labels under one of {', '.join(LABEL_KEYS)} for "
                       f"a named loss (it has {', '.join(map(str, batch))}), or a loss callable "
                       "(output, batch) -> per-sample losses")
    return key


def default_inputs(batch: Mapping[str, Any]) -> tuple | dict:
    """A dict batch's model inputs: its one non-label entry, else the non-label entries by name."""
    given = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    return tuple(given.values()) if len(given) == 1 else given


@contextlib.contextmanager
def evaluating(template: nn.Module) -> Iterator[None]:
    """The module in eval mode (dropout off, BatchNorm's running statistics) while a product
    runs, its flags given back afterwards: an operator lives longer than one call."""
    training = [m for m in template.modules() if m.training]
    for module in training:  # only these: Module.eval() walks and sets every module (0.2 ms
        module.training = False  # of an MLP's 3.4 ms product when it ran at each product)
    try:
        yield
    finally:
        for module in training:
            module.training = True


def objective(model: nn.Module, data: Any, *, loss: Any = "cross_entropy",
              params: Mapping[str, torch.Tensor] | None = None, wrt: Wrt = None,
              inputs: Inputs | None = None,
              device: torch.device | str | None = None) -> Objective:
    """The Objective of `model` (weights `params`, a state dict, if given) on `data`: a pair of
    tensors, a split, or any iterable of pair or dict batches that can be iterated again; `wrt`
    names the parameters differentiated (a name, names, or a predicate on a name; all by
    default). Bad input in one line."""
    loss = check_loss(loss)
    with _prepared(model, params, device) as (template, state):
        theta, buffers = parameters_of(template, state)
        first = next(iter(theta.values()))
        dtype = _dtype(state)
        template.eval()
        if _dict_batches(data):
            source: Source | DictBatches = DictBatches(
                [data] if isinstance(data, Mapping) else data, device=first.device, dtype=dtype)
            made = Objective(template, theta, buffers, source, loss, (), inputs)
            _check_dict(made)
        else:
            source = as_source(data, device=first.device, dtype=dtype)
            check_data(template, state, {"data": source}, loss)
            made = Objective(template, theta, buffers, source, loss, ())
        return dataclasses.replace(made, wrt=_chosen(theta, wrt))


def _dict_batches(data: Any) -> bool:
    if isinstance(data, Mapping):
        return True
    if isinstance(data, (tuple, list)):  # a pair (x, y), or a list of batches
        return bool(data) and isinstance(data[0], Mapping)
    if isinstance(data, (torch.Tensor, str, bytes)) or not isinstance(data, Iterable):
        return False
    dataset = getattr(data, "dataset", None)  # a DataLoader: its first item, not a collated batch
    if dataset is not None and hasattr(dataset, "__getitem__"):
        try:
            return isinstance(dataset[0], Mapping)
        except Exception:  # noqa: BLE001 - an iterable-style dataset: look at a batch instead
            pass
    return isinstance(next(iter(data), None), Mapping)


def _check_dict(made: Objective) -> None:
    """One forward pass and the loss on the first batch, errors said in one line."""
    batch = next(iter(made.batches(0)))
    with torch.no_grad():
        try:
            output = made.output({}, batch)
        except Exception as err:  # the user's forward: whatever it raises, say it in one line
            raise BadInput(f"the model cannot take the dict batch (keys {', '.join(batch)}): "
                           f"{_first_line(err)}") from None
        if not callable(made.loss):
            check_labels(output, batch[label_key(batch)], made.loss, "the dict batch's",
                         masking="(output, batch)")
        losses = made.scored(output, batch)
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (rows_in(batch),):
        shape = list(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise BadInput(f"the loss must give one loss per sample (shape [{rows_in(batch)}]), "
                       f"got {shape}")


def _chosen(theta: Tensors, wrt: Wrt) -> tuple[str, ...]:
    if wrt is None:
        return tuple(theta)
    if isinstance(wrt, str):  # one name, not its characters
        wrt = [wrt]
    if callable(wrt):
        names = tuple(k for k in theta if wrt(k))
    else:
        unknown = [k for k in wrt if k not in theta]
        if unknown:
            raise BadInput(f"the model has no parameter {unknown[0]!r}; its parameters are "
                           f"{', '.join(theta)}")
        names = tuple(k for k in theta if k in set(wrt))
    if not names:
        raise BadInput("no parameter is chosen (wrt selects none of the model's parameters)")
    return names

