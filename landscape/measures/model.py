"""How a measurement takes a user's model: the module to call, the state to evaluate, and a state
dict fitted to the module's keys.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from landscape.errors import BadInput
from landscape.measures.options import Normalization

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
    device = first.device if device is None else torch.device(device)
    template = model if first.device == device else _copy_to(model, device)
    expected = template.state_dict()
    state = expected if params is None else fit_state(params, expected, "params")
    state = {k: v.detach().to(device) for k, v in state.items()}
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield template, state
    finally:
        for module, training in flags:
            module.training = training


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    import copy
    return copy.deepcopy(model).to(device)


def _dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    return next(v.dtype for v in state.values() if v.is_floating_point())


def _norm(normalization: str, include_biasbn: bool) -> Normalization:
    return Normalization(normalization, include_biasbn)


STATE_KEYS = ("state_dict", "model", "model_state_dict", "net")


def fit_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
              what: str) -> dict[str, torch.Tensor]:
    """`state` with the keys and in the order of `expected` (a model's state dict): a prefix such
    as "model." or DDP's "module." is removed where that makes the keys fit; bad input names the
    first key or shape that does not fit (`what` says whose)."""
    state = _fitted_names(dict(state), expected)
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
    return {k: state[k] for k in expected}


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
