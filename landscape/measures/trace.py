"""The trace and the diagonal of a curvature operator (operators.py) from its products, each with
its standard error.

- Hutchinson (1989): tr A = E[z'Az] for Rademacher z; the mean over `probes` seeded draws, with
  its standard error std / sqrt(probes). Probes are drawn PROBE_BATCH at a time and multiplied
  as one block.
- Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1): with m products, m/3 of them
  sketch the top of the spectrum (Q: an orthonormal basis of A S, S Rademacher [N, m/3]) whose
  trace tr(Q'AQ) is exact (m/3 more products), and Hutchinson estimates the rest on the
  deflated (I - QQ')A(I - QQ') with the last m/3. Error O(1/m) against Hutchinson's O(1/sqrt m)
  where a few eigenvalues dominate (a network's Hessian); its standard error is that of the
  Hutchinson part, given Q.
- Diagonal (Bekas, Kokiopoulou & Saad 2007, Eq. 2.1): diag A ~ sum_k z_k * A z_k / sum_k z_k * z_k
  over Rademacher z_k (the denominator is the number of probes), with each entry's standard
  error; or exact, from the unit vectors in blocks (N products), when no probes are given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from landscape.errors import BadInput
from landscape.measures.model import Tensors
from landscape.measures.spectrum import draws, unflatten

if TYPE_CHECKING:
    from landscape.measures.operators import Operator

PROBE_BATCH = 8  # probes drawn and multiplied at once (the draws of a seed depend on it)


class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error."""

    value: float
    stderr: float


class Diagonal(NamedTuple):
    """The diagonal {name: tensor shaped as the parameter} and each entry's standard error
    (zeros where it is exact)."""

    value: Tensors
    stderr: Tensors


def rademacher(operator: Operator, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, N] entries +-1, drawn parameter by parameter in the model's order."""
    return torch.cat([(torch.randint(0, 2, (count, p.numel()), generator=generator) * 2 - 1)
                      for p in operator.params.values()], 1).to(operator.device, operator.dtype)


def hutchinson_trace(operator: Operator, *, probes: int = 100, seed: int = 0,
                     stderr: float | None = None) -> Estimate:
    """Hutchinson's estimate of tr A over `probes` Rademacher vectors, with its standard error;
    with `stderr`, it stops earlier, at the first block of probes after which the standard error
    is at most that (after two blocks at least: an error estimated from fewer scatters)."""
    if probes < 1:
        raise BadInput(f"probes must be at least 1, got {probes}")
    if stderr is not None and not stderr >= 0:
        raise BadInput(f"stderr must be a number >= 0, got {stderr}")
    generator = draws(seed)
    values = []
    for start in range(0, probes, PROBE_BATCH):
        z = rademacher(operator, min(PROBE_BATCH, probes - start), generator)   # [count, N]
        values.append((z * operator.matmat(z)).sum(1))
        if stderr is not None and len(values) > 1 and _stderr(torch.cat(values).double()) <= stderr:
            break
    samples = torch.cat(values).double()
    return Estimate(float(samples.mean()), _stderr(samples))


def hutchpp_trace(operator: Operator, *, products: int = 99, seed: int = 0) -> Estimate:
    """Hutch++'s estimate of tr A from `products` products (a multiple of 3 is used fully), with
    the standard error of its Hutchinson part (see the module's text)."""
    third = products // 3
    if third < 1:
        raise BadInput(f"Hutch++ needs at least 3 products, got {products}")
    generator = draws(seed)
    sketch = rademacher(operator, third, generator)                               # S': [m/3, N]
    probes = rademacher(operator, third, generator)                               # G': [m/3, N]
    q = torch.linalg.qr(_blocks(operator, sketch).T).Q.T                          # Q': [m/3, N]
    top = float((q * _blocks(operator, q)).sum())                                 # tr(Q'AQ)
    deflated = probes - (probes @ q.T) @ q                                        # (I - QQ')G
    rest = _blocks(operator, deflated)
    samples = ((deflated * (rest - (rest @ q.T) @ q)).sum(1)).double()
    return Estimate(top + float(samples.mean()), _stderr(samples))


def diagonal(operator: Operator, *, probes: int | None = None, seed: int = 0) -> Diagonal:
    """The diagonal of A: Bekas et al.'s estimate over `probes` Rademacher vectors, or exact
    (unit vectors, N products) when `probes` is None."""
    n = operator.shape[0]
    if probes is None:
        out = torch.empty(n, dtype=operator.dtype, device=operator.device)
        for start in range(0, n, PROBE_BATCH):
            count = min(PROBE_BATCH, n - start)
            units = torch.zeros(count, n, dtype=operator.dtype, device=operator.device)
            units[torch.arange(count), torch.arange(start, start + count)] = 1
            out[start:start + len(units)] = (units * operator.matmat(units)).sum(1)
        return Diagonal(unflatten(out, operator.params),
                        unflatten(torch.zeros_like(out), operator.params))
    if probes < 1:
        raise BadInput(f"probes must be at least 1, got {probes}")
    generator = draws(seed)
    z = rademacher(operator, probes, generator)
    samples = z * _blocks(operator, z)                                            # [probes, N]
    stderr = samples.std(0) / math.sqrt(probes) if probes > 1 else torch.full_like(
        samples[0], math.nan)
    return Diagonal(unflatten(samples.mean(0), operator.params),
                    unflatten(stderr, operator.params))


def _blocks(operator: Operator, vectors: torch.Tensor) -> torch.Tensor:
    """A times the rows of `vectors`, PROBE_BATCH rows a call (bounded memory)."""
    return torch.cat([operator.matmat(vectors[i:i + PROBE_BATCH])
                      for i in range(0, len(vectors), PROBE_BATCH)])


def _stderr(samples: torch.Tensor) -> float:
    return float(samples.std() / math.sqrt(len(samples))) if len(samples) > 1 else math.nan
