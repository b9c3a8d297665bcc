"""Norm-based measures of any model's weights, as Jiang et al. 2020 ("Fantastic generalization
measures and where to find them", App. C) define them, with the papers they come from. Equation
numbers are those of Jiang et al.'s App. C (arXiv:1912.02178), by which Dziugaite et al. 2020's
reimplementation labels its measures.

A layer's weight matrix W_l: every parameter of two or more dimensions (linear, convolution,
embedding weights); a convolution kernel [out, in, kh, kw] is taken as the matrix
[out, in * kh * kw], as Jiang et al. reshape it. Biases and normalization parameters (1-D) are no
weight matrices. Jiang et al. first fold each BatchNorm into the convolution before it; here the
weights are taken as they are (a fold needs to know which layer precedes the BatchNorm, which a
user's model need not tell), and the path norm takes BatchNorm as a layer of its own (path_norm).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from landscape.errors import BadInput
from landscape.measures.filternorm import parameters_of
from landscape.measures.model import Tensors, _first_line, _prepared, fit_state


def weight_matrices(theta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: W_l as [out, rest]} for every parameter of >= 2 dimensions; bad input if none."""
    found = {k: p.reshape(p.shape[0], -1) for k, p in theta.items() if p.dim() >= 2}
    if not found:
        raise BadInput("the model has no weight matrices (parameters of 2 or more dimensions) "
                       "for a norm measure")
    return found


def _weights(model: nn.Module, params: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    with _prepared(model, params, None) as (template, state):
        theta, _ = parameters_of(template, state)
    return {k: v.double() for k, v in weight_matrices(theta).items()}


def _product(norms: Sequence[torch.Tensor]) -> float:
    """prod_l norms[l], summed in logs: a deep network's product overflows only at the end (inf)."""
    return math.exp(math.fsum(math.log(float(v)) if v > 0 else -math.inf for v in norms))


def frobenius_product(model: nn.Module, *,
                      params: Mapping[str, torch.Tensor] | None = None) -> float:
    """prod_l ||W_l||_F (Jiang et al. 2020, Eq. 37, in logs of squares there; Neyshabur et al.
    2015, "Norm-based capacity control")."""
    return _product([torch.linalg.matrix_norm(W) for W in _weights(model, params).values()])


def frobenius_sum(model: nn.Module, *, params: Mapping[str, torch.Tensor] | None = None) -> float:
    """sum_l ||W_l||_F^2, the squared l2 norm of all weight matrices (Jiang et al. 2020,
    Eq. 42, "parameter norm")."""
    return float(sum(W.square().sum() for W in _weights(model, params).values()))


def spectral_product(model: nn.Module, *,
                     params: Mapping[str, torch.Tensor] | None = None) -> float:
    """prod_l ||W_l||_2, each the largest singular value of the layer's (reshaped) matrix
    (Jiang et al. 2020, Eq. 32; Bartlett et al. 2017). For a convolution this is the reshaped
    kernel's norm, not the norm of the convolution as an operator (Sedghi et al. 2019)."""
    return _product([torch.linalg.matrix_norm(W, ord=2) for W in _weights(model, params).values()])


def distance_from_init(model: nn.Module, init: Mapping[str, torch.Tensor], *,
                       params: Mapping[str, torch.Tensor] | None = None) -> float:
    """||w - w_0||_2 over all parameters (biases and normalization parameters too; buffers not),
    w_0 the initial state dict `init` (Jiang et al. 2020, "distance to initialization";
    Nagarajan & Kolter 2019)."""
    theta, start = _with_init(model, init, params)
    return math.sqrt(sum(float((theta[k] - start[k]).double().square().sum()) for k in theta))


def frobenius_distance(model: nn.Module, init: Mapping[str, torch.Tensor], *,
                       params: Mapping[str, torch.Tensor] | None = None) -> float:
    """sum_l ||W_l - W_l^0||_F^2 over the weight matrices (Jiang et al. 2020, Eq. 40,
    "Frobenius distance to initialization")."""
    theta, start = _with_init(model, init, params)
    weights = weight_matrices(theta)
    return float(sum((W - start[k].reshape(W.shape)).double().square().sum()
                     for k, W in weights.items()))


def _with_init(model, init, params) -> tuple[Tensors, Tensors]:
    with _prepared(model, params, None) as (template, state):
        theta, _ = parameters_of(template, state)
        start = fit_state(init, template.state_dict(), "the initial weights (init)")
    return theta, {k: start[k].to(theta[k]) for k in theta}


def path_norm(model: nn.Module, input_shape: Sequence[int], *,
              params: Mapping[str, torch.Tensor] | None = None,
              device: torch.device | str | None = None) -> float:
    """The l2 path norm (Neyshabur et al. 2015, "Norm-based capacity control", phi_2; Jiang et
    al. 2020, Eq. 44): sqrt(sum_j f_{w^2}(1)_j), the network with every parameter squared
    evaluated on one all-ones input of `input_shape` (without the batch axis), its outputs summed;
    eval mode. For linear and convolution layers with ReLU this is the sum over input-output
    paths of the product of their squared weights (biases are paths from a constant unit);
    for other activations it is still the quantity Jiang et al. compute.

    BatchNorm (eval mode) is the affine map x -> a x + c, a = gamma / sqrt(var + eps),
    c = beta - a mean, taken as a layer of its own whose weights are squared too (a^2 x + c^2).
    Jiang et al. fold it into the preceding convolution first (W <- a W, b <- a b + c) and then
    square, which differs from this where that convolution has a bias ((a b + c)^2 against
    a^2 b^2 + c^2)."""
    with _prepared(model, params, device) as (template, state):
        theta, buffers = parameters_of(template, state)
        squared = {k: v.square() for k, v in theta.items()}
        buffers = dict(buffers)
        for name, module in template.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _affine_batchnorm(f"{name}." if name else "", module, theta, squared, buffers)
        first = next(iter(theta.values()))
        ones = torch.ones((1, *input_shape), dtype=first.dtype, device=first.device)
        template.eval()
        with torch.no_grad():
            try:
                out = functional_call(template, (squared, buffers), (ones,))
            except Exception as err:  # noqa: BLE001 - the user's forward, in one line
                raise BadInput(f"the path norm runs the model on an all-ones float input of "
                               f"shape {list(input_shape)}, which it cannot take (token ids?): "
                               f"{_first_line(err)}") from None
    total = float(out.double().sum())
    if total < 0:
        raise BadInput("the network with squared weights gives a negative output sum (its "
                       "activations turn positive inputs negative): it has no path norm")
    return math.sqrt(total)


def _affine_batchnorm(prefix: str, module: nn.Module, theta: Tensors, squared: Tensors,
                      buffers: Tensors) -> None:
    """Set a BatchNorm's entries in `squared` and `buffers` so that in eval mode it computes
    a^2 x + c^2 (path_norm): with affine parameters, weight a^2, bias c^2 and the identity's
    statistics (mean 0, var + eps = 1); without, the statistics (x - m) / sqrt(v + eps) needs:
    v + eps = a^-4, m = -c^2 / a^2 (a = 1 / sqrt(var + eps) > 0 there)."""
    mean, var = buffers.get(f"{prefix}running_mean"), buffers.get(f"{prefix}running_var")
    if mean is None or var is None:  # no running statistics: eval mode normalizes by the batch
        raise BadInput(f"path_norm needs BatchNorm running statistics; {prefix[:-1]!r} keeps none")
    gamma, beta = theta.get(f"{prefix}weight"), theta.get(f"{prefix}bias")
    a = (1.0 if gamma is None else gamma) / torch.sqrt(var + module.eps)
    c = (0.0 if beta is None else beta) - a * mean
    if gamma is not None:  # affine=True: torch's BatchNorm has both parameters or neither
        squared[f"{prefix}weight"], squared[f"{prefix}bias"] = a.square(), c.square()
        buffers[f"{prefix}running_mean"] = torch.zeros_like(mean)
        buffers[f"{prefix}running_var"] = torch.full_like(var, 1 - module.eps)
    else:
        buffers[f"{prefix}running_mean"] = -c.square() / a.square()
        buffers[f"{prefix}running_var"] = a.pow(-4) - module.eps
