"""How a measurement takes a user's model: the module to call, the state to evaluate, and a state
dict fitted to the module's keys.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call

from landscape.errors import BadInput
from landscape.flooding import Loss, per_sample_loss
from landscape.measures.options import Normalization
from landscape.measures.sources import Source, TensorSource

Tensors = dict[str, torch.Tensor]


@contextlib.contextmanager
def _prepared(model: nn.Module, params: Mapping[str, torch.Tensor] | None,
              device: torch.device | str | None) -> Iterator[tuple[nn.Module, Tensors]]:
    """The module to call (moved to `device` as a copy if asked) and the state to evaluate; the
    user's module gets its train/eval flags back afterwards."""
    if not isinstance(model, nn.Module):
        raise BadInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(iter(model.parameters()), None)
    if first is None:
        raise BadInput("the model has no parameters")
    device = first.device if device is None else _device(device)
    template = model if first.device == device else _copy_to(model, device)
    expected = template.state_dict()
    state = expected if params is None else fit_state(params, expected, "params")
    aliases = _aliases(template)
    state = {k: v.detach().to(device) for k, v in state.items() if k not in aliases}
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield template, state
    finally:
        for module, training in flags:
            module.training = training


def _device(asked: Any) -> torch.device:
    """`asked` as a device this machine has: a device string torch cannot read, or a GPU it does
    not have, is bad input here, not torch's error at the first tensor moved there."""
    try:
        device = torch.device(asked)
    except (RuntimeError, TypeError):
        raise BadInput(f"device {str(asked)!r} is not a device name such as 'cpu', 'cuda' or "
                       "'cuda:1'") from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # a build without CUDA: AssertionError
        raise BadInput(f"device {str(asked)!r} cannot be used here: {_first_line(err)}") from None
    return device


def _aliases(module: nn.Module) -> set[str]:
    """The later names of a tensor the module holds under several (tied weights, as a language
    model's output layer shares its embedding; a submodule used twice). Left out of the state,
    the tensor is differentiated once, by its first name (named_parameters' own deduplication),
    and functional_call gives it to every name; two values for one tensor are an error there."""
    def names(remove_duplicate: bool) -> set[str]:
        return ({k for k, _ in module.named_parameters(remove_duplicate=remove_duplicate)}
                | {k for k, _ in module.named_buffers(remove_duplicate=remove_duplicate)})
    return names(False) - names(True)


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    import copy
    return copy.deepcopy(model).to(device)


def _dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    return next(v.dtype for v in state.values() if v.is_floating_point())


def _norm(normalization: str, include_biasbn: bool) -> Normalization:
    return Normalization(normalization, include_biasbn)


def check_data(template: nn.Module, state: Mapping[str, torch.Tensor],
               sources: Mapping[str, Source], loss: Loss) -> None:
    """Bad input, before any work, where the model cannot take a data split's inputs or the loss
    its labels: one forward pass of each split's first two rows (eval mode, no gradients), and the
    loss on them. A user's data of the wrong shape or label type is then named in one line, not
    met as torch's error deep inside a measurement (or, for a class index out of range on a GPU, a
    device-side assert that ends the process). The labels of tensor data are checked all, those
    of an iterable in its first batch (check_labels)."""
    template.eval()  # a training-mode BatchNorm would update the state's running statistics
    for split, source in sources.items():
        whose = "the data's" if split == "data" else f"the {split} data's"
        x, y = next(iter(source.batches(2)))
        x, y = x[:2], y[:2]
        try:
            with torch.no_grad():
                logits = functional_call(template, dict(state), (x,))
        except Exception as err:  # the user's forward: whatever it raises, say it in one line
            shape = ", ".join(["n", *map(str, source.input_shape())])
            raise BadInput(f"the model cannot take {whose} inputs of shape [{shape}]: "
                           f"{_first_line(err)}") from None
        check_labels(logits, y, loss, whose,
                     every=source.y if isinstance(source, TensorSource) else None)
        try:
            per_sample_loss(logits, y, loss)
        except BadInput:
            raise
        except Exception as err:  # a user's loss function, or labels of the wrong shape
            name = loss if isinstance(loss, str) else getattr(loss, "__name__", "function")
            raise BadInput(f"the loss {name} cannot take the model's outputs (shape "
                           f"{list(logits.shape)}) with {whose} labels (shape {list(y.shape)}, "
                           f"{y.dtype}): {_first_line(err)}") from None


def check_labels(output: Any, y: torch.Tensor, loss: Loss, whose: str, *,
                 every: torch.Tensor | None = None, masking: str = "(logits, y)") -> None:
    """Bad input where `loss` cannot score the model's `output` [m, ..., C] against labels y of
    the same rows: outputs [m, outputs] at least (a loss callable's (logits, y) too); for a named
    loss, labels [m, ...] with the outputs' shape but its last axis, and label values it can
    score, all of `every` where given. Cross-entropy needs int64 or int32 classes the model has
    outputs for (-100, an ignore index, included: a loss callable of the form `masking` can skip
    them); the logistic loss one score per sample and 0/1 labels, which flooding.per_sample_loss
    maps to -1/+1 as the paper's t, so that -1/+1 labels would be scored as -3/+1."""
    if not isinstance(output, torch.Tensor):
        raise BadInput(f"the model returns a {type(output).__name__}, not a tensor of outputs "
                       "[rows, classes]")
    if output.dim() < 2:
        raise BadInput(f"the model returns outputs of shape {list(output.shape)}, not [rows, "
                       "outputs]: it must return [n, 1] for one output per sample (not squeezed "
                       "to [n])")
    if len(output) != len(y):
        raise BadInput(f"{whose} labels have {len(y)} rows, but the model gives outputs for "
                       f"{len(output)}")
    if callable(loss):
        return
    if tuple(output.shape[:-1]) != tuple(y.shape):
        raise BadInput(f"the model's outputs (shape {list(output.shape)}) do not fit {whose} "
                       f"labels (shape {list(y.shape)}): {loss} needs outputs shaped as the "
                       "labels plus one last axis of scores")
    labels = y if every is None else every
    if loss == "logistic":
        if output.shape[-1] != 1:
            raise BadInput(f"the logistic loss takes one score per sample, but the model returns "
                           f"outputs of shape {list(output.shape)}: it must return [n, 1]")
        other = labels[(labels != 0) & (labels != 1)]
        if len(other):
            raise BadInput(f"logistic labels must be 0 or 1 ({whose} hold {other[0].item()}); "
                           "map -1/+1 labels with (y + 1) // 2")
        return
    if y.dtype not in (torch.int64, torch.int32):  # the index dtypes gather takes
        kind = "float" if y.is_floating_point() else str(y.dtype).removeprefix("torch.")
        raise BadInput(f"{whose} labels are {kind} ({y.dtype}); cross_entropy needs integer "
                       "class labels, int64 or int32 (y.long())")
    if (labels == -100).any():
        raise BadInput(f"{whose} labels hold -100, an ignore index: ignored labels are not "
                       f"supported; pass a loss callable {masking} that masks them")
    low, high, classes = int(labels.min()), int(labels.max()), output.shape[-1]
    if low < 0 or high >= classes:
        raise BadInput(f"{whose} labels run from {low} to {high}, but the model has "
                       f"{classes} outputs (classes 0 to {classes - 1})")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


STATE_KEYS = ("state_dict", "model", "model_state_dict", "net")


def fit_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
              what: str) -> dict[str, torch.Tensor]:
    """`state` with the keys and in the order of `expected` (a model's state dict): a prefix such
    as "model." or DDP's "module." is removed where that makes the keys fit; bad input names the
    first key or shape that does not fit (`what` says whose)."""
    _check_tensors(state, what)
    state = _tied_filled(_fitted_names(dict(state), expected), expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        which = (f"the model's {missing[0]!r} is not in them" if missing
                 else f"their {unexpected[0]!r} is not in the model")
        raise BadInput(f"{what} do not fit the model: {which} ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected keys)")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise BadInput(f"{what} do not fit the model: {key!r} has shape "
                           f"{list(state[key].shape)} there, {list(value.shape)} in the model")
    # as load_state_dict: floating weights take the model's dtype (a float64 checkpoint of a
    # float32 model was met at the first product with float32 data: "mat1 and mat2 ...")
    return {k: state[k].to(expected[k].dtype) if state[k].is_floating_point()
            and expected[k].is_floating_point() else state[k] for k in expected}


def _check_tensors(state: Mapping[str, Any], what: str) -> None:
    """Bad input at the first value of `state` that is not a tensor (torch's AttributeError at
    its shape otherwise)."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise BadInput(f"{what} must hold tensors, but {key!r} is a {type(value).__name__}")


def _tied_filled(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """`state` with a tied tensor's every name (tied weights saved under one of their names, as
    Hugging Face's save_pretrained saves them): the names `expected` holds as one tensor take
    the value saved under any of them."""
    names: dict[tuple, list[str]] = {}
    for key, value in expected.items():
        if value.numel():
            names.setdefault((value.untyped_storage().data_ptr(), value.storage_offset(),
                              tuple(value.shape), tuple(value.stride())), []).append(key)
    for tied in names.values():
        saved = next((k for k in tied if k in state), None)
        for key in tied if saved is not None else ():
            state.setdefault(key, state[saved])
    return state


def _state_in(content: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(content, Mapping):
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return dict(content)
        for key in STATE_KEYS:
            inner = content.get(key)
            if isinstance(inner, Mapping):
                found = _state_in(inner)
                if found is not None:
                    return found
    return None


def _fitted_names(state: dict[str, torch.Tensor], expected: Mapping[str, Any]
                  ) -> dict[str, torch.Tensor]:
    if set(state) == set(expected):
        return state
    for prefix in {k.split(".", 1)[0] + "." for k in state if "." in k}:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix):]: v for k, v in state.items()}
            if set(stripped) == set(expected):
                return stripped
    return state
