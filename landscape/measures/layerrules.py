"""The GGN's diagonal and trace by layer rules, without per-sample Jacobians.

G = (1/n) sum_i J_i' H_i J_i. With H_i = sum_c l_ic u_ic u_ic' (its eigenvectors, as torch's
eigh gives them), G = (1/n) sum_i sum_c l_ic g_ic g_ic', where g_ic = J_i' u_ic is the gradient
of sample i's output along u_ic: one backward pass of the batch per column c gives, at each layer,
its input a_i and the gradient B_ic by its output, and a layer's rule turns these into each
sample's gradient by the layer's own parameters. Then tr G = (1/n) sum l_ic |g_ic|^2 and
diag G = (1/n) sum l_ic g_ic^2, d backward passes of the batch for d outputs a sample, where
per-sample Jacobians write [rows, d, N] numbers (BackPACK's way, Dangel et al. 2020).

Rules: nn.Linear (any leading axes), nn.Conv1d and nn.Conv2d (grouped, zero padding: B_i times
the unfolded input), BatchNorm with running statistics (eval mode), LayerNorm, nn.Embedding
(indices summed per sample). A linear layer on rows needs no per-sample gradient at all:
|g_i|^2 = |B_i|^2 |a_i|^2 and the diagonal is (l B^2)' a^2. `covered` keeps a layer only if,
on the data's first rows, its rule's gradient of each row is autograd's of that row alone (a
weight also used outside its layer, a layer called twice, a batch axis that is not the data's,
or a rule that does not fit the module fails it); the rest of the parameters go to per-sample
Jacobians (split.py). A layer whose output is later changed in place (ReLU(inplace=True)
after it) passes on a copy, so that its own output keeps the value the rule needs. What a rule
needs of a layer's input whatever the direction (a convolution's unfolded input, a
normalization's normalized one) is made once a chunk and kept for its d passes (`chunk_rows`
counts it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import BadInput
from landscape.measures.graphs import saved_numbers
from landscape.measures.model import Tensors
from landscape.measures.objective import Batch, Objective, rows_of
from landscape.memory import JACOBIAN_NUMBERS, RULE_NUMBERS

Grads = dict[str, torch.Tensor]


class Rule(NamedTuple):
    """A layer type's rule: `prepare(module, a)` what it needs of the input a [m, ...] in every
    direction, `grads(module, prepared, b)` the per-sample gradients {local name: [m, *shape]}
    from it and the gradient b by the layer's output."""

    prepare: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    grads: Callable[[nn.Module, torch.Tensor, torch.Tensor], Grads]


def _as_is(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    return a


def _linear(module: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> Grads:
    a, b = a.reshape(len(a), -1, a.shape[-1]), b.reshape(len(b), -1, b.shape[-1])
    return {"weight": b.transpose(1, 2) @ a, "bias": b.sum(1)}


def _unfold(module: nn.Conv1d | nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """The input's patches [m, groups, in / groups x kernel, L] (a 1-D convolution as a 2-D one
    of height 1)."""
    if isinstance(module, nn.Conv1d):
        a = a.unsqueeze(2)
        spread = [(1, v[0]) for v in (module.kernel_size, module.dilation, module.stride)]
        padding = (0, module.padding[0])
    else:
        spread, padding = [module.kernel_size, module.dilation, module.stride], module.padding
    patches = F.unfold(a, spread[0], dilation=spread[1], padding=padding, stride=spread[2])
    return patches.reshape(len(a), module.groups, -1, patches.shape[-1])


def _conv(module: nn.Conv1d | nn.Conv2d, patches: torch.Tensor, b: torch.Tensor) -> Grads:
    m, groups, _, spots = patches.shape
    b = b.reshape(m, groups, -1, spots)                                   # [m, g, out/g, L]
    weight = (b @ patches.transpose(2, 3)).reshape(m, *module.weight.shape)
    return {"weight": weight, "bias": b.sum(3).reshape(m, -1)}


def _batch_normal(module: nn.modules.batchnorm._BatchNorm, a: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (a.dim() - 2)
    return (a - module.running_mean.view(shape)) * (module.running_var + module.eps).rsqrt(
    ).view(shape)


def _batch_norm(module: nn.Module, normal: torch.Tensor, b: torch.Tensor) -> Grads:
    return {"weight": _within(b * normal, 2), "bias": _within(b, 2)}


def _layer_normal(module: nn.LayerNorm, a: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(a, module.normalized_shape, eps=module.eps)


def _layer_norm(module: nn.LayerNorm, normal: torch.Tensor, b: torch.Tensor) -> Grads:
    kept = normal.dim() - len(module.normalized_shape)
    return {"weight": _within(b * normal, 1, kept), "bias": _within(b, 1, kept)}


def _within(t: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """t summed over its axes start ... stop - 1 (none: t itself; torch's sum(()) sums all)."""
    axes = tuple(range(start, t.dim() if stop is None else stop))
    return t.sum(axes) if axes else t


def _embedding(module: nn.Embedding, ids: torch.Tensor, b: torch.Tensor) -> Grads:
    m, rows = len(ids), module.num_embeddings
    ids, b = ids.reshape(m, -1), b.reshape(m, -1, b.shape[-1])
    if module.padding_idx is not None:  # the padding row's gradient is zero
        b = b * (ids != module.padding_idx).unsqueeze(-1)
    keys = (ids + rows * torch.arange(m, device=ids.device)[:, None]).reshape(-1)
    weight = b.new_zeros(m * rows, b.shape[-1]).index_add_(0, keys, b.reshape(-1, b.shape[-1]))
    return {"weight": weight.view(m, rows, -1)}


LINEAR, CONV = Rule(_as_is, _linear), Rule(_unfold, _conv)


def _rule(module: nn.Module) -> Rule | None:
    """The rule for a module, or None where none applies (then per-sample Jacobians)."""
    if isinstance(module, nn.Linear):
        return LINEAR
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        fits = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return CONV if fits else None
    if isinstance(module, nn.modules.batchnorm._BatchNorm):  # not on batch statistics
        return Rule(_batch_normal, _batch_norm) if module.running_mean is not None else None
    if isinstance(module, nn.LayerNorm):
        return Rule(_layer_normal, _layer_norm)
    if isinstance(module, nn.Embedding):
        fits = module.max_norm is None and not module.scale_grad_by_freq
        return Rule(_as_is, _embedding) if fits else None
    return None


class Layers:
    """Forward hooks on the ruled modules of `made`'s model that hold chosen parameters: each
    call's input and output, kept for the backward passes, and the rules' prepared inputs by
    (module, first row). `copied`: modules whose output is passed on as a copy (a later
    in-place change would alter the one kept)."""

    def __init__(self, made: Objective, names: tuple[str, ...] | None = None,
                 copied: frozenset[str] = frozenset()) -> None:
        chosen = set(made.wrt if names is None else names)
        self.modules: dict[str, tuple[nn.Module, Rule, dict[str, str]]] = {}
        for prefix, module in made.template.named_modules():
            own = {local: f"{prefix}.{local}" if prefix else local
                   for local, _ in module.named_parameters(recurse=False)}
            rule = _rule(module)
            if rule is not None and set(own.values()) & chosen:
                self.modules[prefix] = module, rule, {k: v for k, v in own.items() if v in chosen}
        self.copied = copied
        self.calls: dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]] = {}
        self._prepared: dict[tuple[str, int | None], torch.Tensor] = {}

    def run(self, forward: Callable[[], Any]) -> Any:
        """forward() with the hooks on; the calls recorded in `calls`."""
        self.calls, self._prepared = {prefix: [] for prefix in self.modules}, {}
        handles = [module.register_forward_hook(self._hook(prefix))
                   for prefix, (module, _, _) in self.modules.items()]
        try:
            return forward()
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, prefix: str) -> Callable:
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or not inputs:
                return None
            self.calls[prefix].append((inputs[0].detach(), output, output._version))
            return output.clone() if prefix in self.copied else None
        return hook

    def outputs(self) -> dict[str, torch.Tensor]:
        """Each ruled module's output, for modules called once with a differentiable output."""
        return {p: c[0][1] for p, c in self.calls.items() if len(c) == 1 and c[0][1].requires_grad}

    def prepared(self, prefix: str, rows: slice = slice(None)) -> torch.Tensor:
        """The rule's prepared input of module `prefix` on the batch's `rows`, made once."""
        key = (prefix, rows.start)
        if key not in self._prepared:
            module, rule, _ = self.modules[prefix]
            self._prepared[key] = rule.prepare(module, self.calls[prefix][0][0][rows])
        return self._prepared[key]

    def per_sample(self, prefix: str, grad: torch.Tensor, rows: slice = slice(None)) -> Grads:
        """The chosen parameters' per-sample gradients {name: [m, *shape]} of module `prefix`
        on the batch's `rows`, `grad` the gradient by its output on those rows."""
        module, rule, own = self.modules[prefix]
        found = rule.grads(module, self.prepared(prefix, rows), grad)
        return {name: found[local] for local, name in own.items()}


def covered(made: Objective, first: Batch) -> tuple[tuple[str, ...], frozenset[str]]:
    """(the chosen parameters whose layers' rules hold on the first rows of `first`, the modules
    whose output to copy). A rule holds if, along a seeded random direction of the output of
    the first three rows, its gradient of each row equals autograd's of that row run alone:
    so its batch axis is the data's (a layer in a sequence-first model, or one on rows and
    positions flattened together, fails) and nothing else reaches its weights."""
    layers = Layers(made)
    leaves = {k: p.detach().requires_grad_() for k, p in made.params.items()}
    batch = rows_of(first, slice(3))
    layers.run(lambda: made.output(leaves, rows_of(batch, slice(1))))
    layers.copied = frozenset(p for p, c in layers.calls.items()
                              if any(t._version != v for _, t, v in c))
    output = layers.run(lambda: made.output(leaves, batch))
    good = list(layers.outputs())
    if not good:
        return (), layers.copied
    rows = len(output)
    direction = torch.randn(output.shape, generator=torch.Generator().manual_seed(0),
                            dtype=output.dtype).to(output.device)
    found = dict(zip(good, torch.autograd.grad(output, [layers.outputs()[p] for p in good],
                                                direction, allow_unused=True)))
    ruled = {p: layers.per_sample(p, found[p]) for p in good if found[p] is not None}
    good = [p for p in ruled if all(len(g) == rows for g in ruled[p].values())]
    for row in range(rows):
        if not good:  # every layer failed (a sequence-first model): no rule to check
            break
        alone = made.output(leaves, rows_of(batch, slice(row, row + 1)))
        names = [n for p in good for n in ruled[p]]
        expected = dict(zip(names, torch.autograd.grad(
            alone, [leaves[n] for n in names], direction[row:row + 1], allow_unused=True)))
        good = [p for p in good if all(expected[n] is not None and torch.allclose(
            g[row], expected[n], rtol=1e-4, atol=1e-6 * float(expected[n].abs().max()))
            for n, g in ruled[p].items())]
    held = {n for p in good for n in ruled[p]}
    return tuple(n for n in made.wrt if n in held), layers.copied


def sums(made: Objective, names: tuple[str, ...], copied: frozenset[str], batch: Batch,
         factors: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], *,
         diagonal: bool) -> tuple[float, Tensors | None]:
    """For one chunk of rows: (sum_ic l_ic |g_ic|^2, {name: sum_ic l_ic g_ic^2} if `diagonal`)
    over the parameters `names` (`covered`'s), `factors(output)` giving the loss Hessians'
    eigenvalues l [m, d] and eigenvectors [m, d, d] (columns) by the output."""
    layers = Layers(made, names, copied)
    leaves = {k: p.detach().requires_grad_() for k, p in made.params.items()}
    with torch.enable_grad():
        output = layers.run(lambda: made.output(leaves, batch))
    outputs = layers.outputs()
    if set(outputs) != set(layers.modules):  # data-dependent control flow
        raise BadInput(f"layer {min(set(layers.modules) - set(outputs))} did not run once on "
                       "every chunk of the data, as on its first rows")
    weights, directions = factors(output.detach())
    total = output.new_zeros(())
    squares = {n: torch.zeros_like(leaves[n]) for n in names} if diagonal else None
    scale = weights.abs().max()
    for c in range(weights.shape[1]):
        weight = weights[:, c]
        if bool((weight.abs() <= torch.finfo(weight.dtype).eps * scale).all()):
            continue  # a direction every sample's loss is flat along (cross-entropy has one)
        grads = torch.autograd.grad(output, list(outputs.values()),
                                    directions[:, :, c].reshape(output.shape),
                                    retain_graph=True, allow_unused=True)
        for prefix, grad in zip(outputs, grads):
            if grad is not None:
                total += _accumulate(layers, prefix, grad, weight, squares)
    return float(total), squares


def _accumulate(layers: Layers, prefix: str, grad: torch.Tensor, weight: torch.Tensor,
                squares: Tensors | None) -> torch.Tensor:
    """sum_i weight_i |g_i|^2 over the module's chosen parameters, and weight_i g_i^2 added to
    `squares`: a linear layer on rows without per-sample gradients (|g_i|^2 = |B_i|^2 |a_i|^2,
    the diagonal (weight B^2)' a^2), others in sub-chunks of rows whose per-sample gradients
    hold about JACOBIAN_NUMBERS numbers."""
    module, rule, own = layers.modules[prefix]
    a, total = layers.calls[prefix][0][0], grad.new_zeros(())
    if rule is LINEAR and a.dim() == 2:
        b2, a2 = grad.square(), a.square()
        if "weight" in own:
            total += weight @ (b2.sum(1) * a2.sum(1))
            if squares is not None:
                squares[own["weight"]] += (b2 * weight[:, None]).T @ a2
        if "bias" in own:
            total += weight @ b2.sum(1)
            if squares is not None:
                squares[own["bias"]] += weight @ b2
        return total
    size = sum(math.prod(getattr(module, local).shape) for local in own)
    step = max(1, JACOBIAN_NUMBERS // size)
    for start in range(0, len(a), step):
        rows = slice(start, start + step)
        for name, g in layers.per_sample(prefix, grad[rows], rows).items():
            g = g.reshape(len(g), -1)
            if squares is None:
                total += weight[rows] @ torch.linalg.vector_norm(g, dim=1).square()
            else:
                g2 = (weight[rows] @ g.square()).view_as(squares[name])
                total += g2.sum()
                squares[name] += g2
    return total


def chunk_rows(made: Objective, names: tuple[str, ...], copied: frozenset[str],
               first: Batch) -> int:
    """Rows a chunk: its forward graph (kept for the d backward passes), one pass's gradients,
    the rules' prepared inputs and the loss Hessians' factors (2 d^2 a row) within
    RULE_NUMBERS, as the first row of `first` takes."""
    layers = Layers(made, names, copied)
    leaves = {k: p.detach().requires_grad_() for k, p in made.params.items()}
    output, graph = saved_numbers(lambda batch: layers.run(lambda: made.output(leaves, batch)),
                                  rows_of(first, slice(1)))
    d = output[0].numel()
    if 2 * d * d > RULE_NUMBERS:
        raise BadInput(f"the GGN's exact trace takes d backward passes and a d x d loss Hessian a "
                       f"sample, d = {d:,} outputs here: too many; use Hutchinson's trace")
    prepared = sum(layers.prepared(p).numel() for p in layers.outputs())
    return max(1, RULE_NUMBERS // (2 * graph + prepared + 2 * d * d))
