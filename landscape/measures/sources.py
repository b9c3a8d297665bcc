"""Where the measurements read their data: one interface over our in-memory splits, a user's pair
of tensors and any iterable of batches (a torch DataLoader).

A measurement asks a source for `batches(rows)`: (x, y) pairs on the device, x in the model's
floating dtype, one pass over the data per call. Tensors and splits are cut into `rows`-row chunks
(the caller's memory rule, evaluation.rows_for); an iterable keeps its own batch size, so `rows`
does not apply to it. A measurement makes many passes (a 51-point slice: 51 per split), so an
iterable's batches are kept on the device after the first whole pass when they hold at most
KEEP_NUMBERS numbers, and replayed: a DataLoader's per-sample collation is paid once, and every
point sees the same rows (a loader that shuffles or augments gives one draw to all of them). A
larger iterable is re-iterated each pass; so a one-pass iterator (a generator, iter(loader)) is
bad input, whose first batches the checks would otherwise take from the first pass unseen.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Iterable, Iterator, Mapping, Protocol

import torch
from torch.utils._pytree import tree_flatten

from landscape.errors import BadInput
from landscape.memory import KEEP_NUMBERS

Batch = tuple[torch.Tensor, torch.Tensor]


class Source(Protocol):
    def batches(self, rows: int) -> Iterator[Batch]: ...

    def count(self, rows: int) -> int | None: ...

    def input_shape(self) -> tuple[int, ...]: ...


class TensorSource:
    """Rows of x [n, ...] and y [n] (or an in-memory Split, which standardizes stored pixels as
    it gathers them), `rows` at a time."""

    def __init__(self, x: torch.Tensor | None, y: torch.Tensor, *, split=None) -> None:
        self.x, self.y, self.split = x, y, split

    def __len__(self) -> int:
        return len(self.y)

    @property
    def inputs(self) -> torch.Tensor:
        """All model inputs at once [n, ...]."""
        return self.split.x if self.split is not None else self.x

    def count(self, rows: int) -> int:
        """Batches in a pass."""
        return -(-len(self.y) // rows)

    def batches(self, rows: int) -> Iterator[Batch]:
        for start in range(0, len(self.y), rows):
            where = slice(start, start + rows)
            x = self.split.inputs(where) if self.split is not None else self.x[where]
            yield x, self.y[where]

    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:]) if self.split is None else tuple(
            self.split.stored.shape[1:])


class KeptPasses:
    """An iterable of batches, each moved to `device` (floating tensors in `dtype`) by
    `_convert`; after a whole pass that holds at most KEEP_NUMBERS numbers, `_kept` turns it into
    what later passes replay (`self.kept`). The pair sources below and the dict batches of
    objective.py share it."""

    def __init__(self, batches: Iterable, *, device: torch.device, dtype: torch.dtype) -> None:
        # every check, memory probe and product starts a new pass (an Iterator's iter() is itself)
        if isinstance(batches, collections.abc.Iterator):
            raise BadInput(f"data is a one-pass iterator (a {type(batches).__name__}); give "
                           "something that can be iterated again: tensors, a list of batches "
                           "or a DataLoader")
        self.iterable, self.device, self.dtype = batches, device, dtype
        self.kept: Any = None

    def _convert(self, batch: Any) -> Any:
        raise NotImplementedError

    def _kept(self, batches: list) -> Any:
        raise NotImplementedError

    def _passing(self) -> Iterator:
        """One pass over the iterable, kept at its end where it fits."""
        kept: list | None = []
        held = 0
        for batch in self.iterable:
            batch = self._convert(batch)
            if kept is not None:
                held += sum(t.numel() for t in tree_flatten(batch)[0]
                            if isinstance(t, torch.Tensor))
                if held <= KEEP_NUMBERS:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        if kept == []:
            raise BadInput("the data source yielded no batches")
        if kept is not None:
            # a pass read during an evaluation (evaluation.mean_loss: inference mode) is replayed
            # to passes that differentiate: what is kept must be made outside inference mode
            with torch.inference_mode(False):
                self.kept = self._kept(kept)


class LoaderSource(KeptPasses):
    """An iterable of (x, y, ...) batches, moved to `device`; extra items of a batch (sample
    weights, indices) are ignored. After a whole pass that fits KEEP_NUMBERS, later passes replay
    it: as one TensorSource chunked by the caller's `rows` where the batches' inputs share a shape
    (a loader's own small batches would each cost a call), else batch by batch."""

    def count(self, rows: int) -> int | None:
        """Batches in a pass, where known."""
        if isinstance(self.kept, TensorSource):
            return self.kept.count(rows)
        if self.kept is not None:
            return len(self.kept)
        return len(self.iterable) if hasattr(self.iterable, "__len__") else None

    def batches(self, rows: int) -> Iterator[Batch]:
        if isinstance(self.kept, TensorSource):
            yield from self.kept.batches(rows)
        elif self.kept is not None:
            yield from self.kept
        else:
            yield from self._passing()

    def _convert(self, batch: Any) -> Batch:
        x, y = _pair(batch)
        if len(x) != len(y):  # checked here: check_data sees only the first batch
            raise BadInput(f"a data batch has {len(x)} rows of inputs but {len(y)} labels")
        return _to(x, self.device, self.dtype), y.to(self.device)

    def _kept(self, batches: list[Batch]) -> TensorSource | list[Batch]:
        if len({tuple(x.shape[1:]) for x, _ in batches}) == 1:
            return TensorSource(torch.cat([x for x, _ in batches]),
                                torch.cat([y for _, y in batches]))
        return [(_saveable(x), _saveable(y)) for x, y in batches]

    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.kept, TensorSource):
            return self.kept.input_shape()
        x, _ = _pair(next(iter(self.iterable)))
        return tuple(x.shape[1:])


def _saveable(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a copy autograd may save for backward where it was made in inference mode."""
    if not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


SEVERAL_INPUTS = ('a pair ((x1, x2), y) holds several model inputs: a model with several '
                  'inputs takes dict batches with inputs=, e.g. {"a": x1, "b": x2, "labels": y} '
                  'with inputs=lambda batch: (batch["a"], batch["b"])')


def _several_inputs(batch: Any) -> bool:
    """Whether `batch` is ((x1, x2, ...), y): a list of batches never has a tensor second."""
    return (isinstance(batch, (tuple, list)) and len(batch) >= 2
            and isinstance(batch[0], (tuple, list)) and isinstance(batch[1], torch.Tensor))


def _pair(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if _several_inputs(batch):
        raise BadInput(SEVERAL_INPUTS)
    if isinstance(batch, Mapping):
        batch = (batch.get("x", batch.get("input")), batch.get("y", batch.get("label")))
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not all(
            isinstance(t, torch.Tensor) for t in batch[:2]):
        raise BadInput("a data batch must be a pair (x, y) of tensors (or a tuple starting with "
                       f"one), got {type(batch).__name__}")
    return batch[0], batch[1]


def _to(x: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    x = x.to(device)
    return x.to(dtype) if dtype is not None and x.is_floating_point() else x


def as_source(data: Any, *, device: torch.device, dtype: torch.dtype | None
              ) -> TensorSource | LoaderSource:
    """A Source for `data`: a (x, y) pair of tensors, an in-memory Split, a Source, or any
    iterable of (x, y) batches such as a DataLoader; floating inputs are cast to `dtype` (the
    model's) on `device`."""
    from landscape.data import Split

    if isinstance(data, (TensorSource, LoaderSource)):
        return data
    if isinstance(data, Split):
        return TensorSource(None, data.y, split=data)
    if _several_inputs(data):  # else taken for a list of batches, x2 for one of them
        raise BadInput(SEVERAL_INPUTS)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise BadInput(f"x has {len(x)} rows but y has {len(y)}")
        if len(y) == 0:
            raise BadInput("the data has no rows")
        return TensorSource(_to(x, device, dtype), y.to(device))
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor)):
        return LoaderSource(data, device=device, dtype=dtype)
    raise BadInput(f"data must be a pair (x, y) of tensors or an iterable of (x, y) batches "
                   f"(e.g. a DataLoader), got {type(data).__name__}")


def as_sources(data: Any, *, device: torch.device, dtype: torch.dtype
               ) -> dict[str, TensorSource | LoaderSource]:
    """Named sources: a mapping of split name to data as it is, one data source as "train"."""
    if isinstance(data, Mapping):
        if not data:
            raise BadInput("the mapping of data splits is empty")
        return {str(k): as_source(v, device=device, dtype=dtype) for k, v in data.items()}
    return {"train": as_source(data, device=device, dtype=dtype)}
