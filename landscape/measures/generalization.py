"""The battery of generalization measures on any model (issue 24; the measures of Jiang et al.
2020, "Fantastic generalization measures and where to find them", and Andriushchenko et al.
2023 beside this package's own): one call, one {name: float}, each entry the result of the
function it names, with the same options. Also the flatness of a filter-normalized slice.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape.errors import BadInput
from landscape.flooding import Loss, check_loss
from landscape.measures.gradients import gradient_amplitude
from landscape.measures.hessian import average_sharpness, hessian_top_eigenvalue, hessian_trace
from landscape.measures.model import _dtype, _prepared
from landscape.measures.norms import (
    distance_from_init,
    frobenius_distance,
    frobenius_product,
    frobenius_sum,
    path_norm,
    spectral_product,
)
from landscape.measures.outputs import fisher_rao_norm, gradient_noise, output_margin
from landscape.measures.pacbayes import pac_bayes_sigma
from landscape.measures.slices import loss_slice
from landscape.measures.sources import Source, as_source
from landscape.measures.worstcase import worst_case_sharpness


def flat_width(alphas: np.ndarray, losses: np.ndarray, rise: float) -> float:
    """The half-width of the interval around alpha = 0 where the loss stays within `rise` of
    its value at 0: the mean over the two sides of the distance from 0 to the first point where
    the loss exceeds L(0) + rise (linearly interpolated between the grid points), or to the end
    of the grid where it never does. alphas: an ascending grid containing 0."""
    center = int(np.flatnonzero(alphas == 0)[0])
    limit = losses[center] + rise

    def reach(order: Sequence[int]) -> float:
        for before, at in pairwise(order):
            if losses[at] > limit:
                t = (limit - losses[before]) / (losses[at] - losses[before])
                return abs(alphas[before] + t * (alphas[at] - alphas[before]))
        return abs(alphas[order[-1]])

    return (reach(range(center, len(alphas))) + reach(range(center, -1, -1))) / 2


def slice_flatness(model: nn.Module, data: Any, *, rise: float = 0.1, span: float = 1.0,
                   points: int = 51, seed: int = 0, loss: Loss = "cross_entropy",
                   params: Mapping[str, torch.Tensor] | None = None,
                   normalization: str = "filter", include_biasbn: bool = False,
                   device: torch.device | str | None = None) -> float:
    """flat_width of the loss along the filter-normalized slice loss_slice(model, data, points,
    span, seed) (paper Sec. 5.3; Li et al. 2018): how far, in units of each filter's norm, the
    weights may move along a random direction before the loss rises by `rise` -- the width of
    the basin that flat-minima arguments compare (Hochreiter & Schmidhuber 1997; Keskar et al.
    2017). `points` must be odd, so that alpha = 0 is on the grid."""
    if points % 2 == 0:
        raise BadInput(f"points must be odd (alpha = 0 on the grid), got {points}")
    if not (np.isfinite(rise) and rise > 0):
        raise BadInput(f"rise must be a finite number > 0, got {rise}")
    line = loss_slice(model, data, loss=loss, params=params, points=points, span=span, seed=seed,
                      normalization=normalization, include_biasbn=include_biasbn, device=device)
    alphas = line.x.copy()
    alphas[points // 2] = 0.0  # linspace's middle point, exactly
    return flat_width(alphas, line["train_loss"], rise)


@dataclass(frozen=True)
class Entry:
    """One measure of the battery: the function, how it is called ("data": model and data;
    "weights": the model alone; "init": the model and the initial weights; "shape": the model
    and the data's input shape), the options it sets itself, the result's attribute that is
    the value (None: the result is the value), and the direction in which it is expected to
    predict the generalization gap: +1, growing with it (a norm, a sharpness); -1, shrinking
    (a flatness or a margin: a larger sigma, basin or margin is expected to generalize better;
    Jiang et al. 2020 rank 1/sigma^2 and 1/margin^2, which order models as -sigma and -margin)."""

    function: Callable[..., Any]
    takes: str = "data"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    value: str | None = None
    direction: int = 1

    def check(self, options: Mapping[str, Any], name: str) -> None:
        """Bad input for an option the function lacks or the battery sets itself."""
        accepted = inspect.signature(self.function).parameters
        wrong = [k for k in options if k not in accepted or k in self.fixed or k in COMMON
                 or k in ("model", "data", "init", "input_shape")]
        if wrong:
            raise BadInput(f"{name} takes no option {wrong[0]!r} in the battery")

    def __call__(self, model: nn.Module, source: Source,
                 init: Mapping[str, torch.Tensor] | None, given: Mapping[str, Any],
                 options: Mapping[str, Any]) -> float:
        accepted = inspect.signature(self.function).parameters
        kwargs = {**{k: v for k, v in given.items() if k in accepted}, **self.fixed, **options}
        leading = {"data": (model, source), "weights": (model,), "init": (model, init),
                   "shape": (model, source.input_shape())}[self.takes]
        result = self.function(*leading, **kwargs)
        return float(result if self.value is None else getattr(result, self.value))


COMMON = ("loss", "params", "seed", "device")  # given to every measure that takes them
MEASURES: dict[str, Entry] = {
    "worst_case_sharpness": Entry(worst_case_sharpness, value="value"),
    "adaptive_worst_case_sharpness": Entry(worst_case_sharpness, fixed={"adaptive": True},
                                           value="value"),
    "pac_bayes_sigma": Entry(pac_bayes_sigma, value="sigma", direction=-1),
    "magnitude_aware_pac_bayes_sigma": Entry(pac_bayes_sigma, fixed={"magnitude_aware": True},
                                             value="sigma", direction=-1),
    "frobenius_product": Entry(frobenius_product, "weights"),
    "frobenius_sum": Entry(frobenius_sum, "weights"),
    "spectral_product": Entry(spectral_product, "weights"),
    "path_norm": Entry(path_norm, "shape"),
    "distance_from_init": Entry(distance_from_init, "init"),
    "frobenius_distance": Entry(frobenius_distance, "init"),
    "output_margin": Entry(output_margin, direction=-1),
    "fisher_rao_norm": Entry(fisher_rao_norm),
    "gradient_noise": Entry(gradient_noise),
    "hessian_top_eigenvalue": Entry(hessian_top_eigenvalue),
    "hessian_trace": Entry(hessian_trace, value="value"),
    "average_sharpness": Entry(average_sharpness, value="value"),
    "gradient_amplitude": Entry(gradient_amplitude),
    "slice_flatness": Entry(slice_flatness, direction=-1),
}


def generalization_measures(model: nn.Module, data: Any, *,
                            init: Mapping[str, torch.Tensor] | None = None,
                            names: Sequence[str] | None = None,
                            options: Mapping[str, Mapping[str, Any]] | None = None,
                            loss: Loss = "cross_entropy",
                            params: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                            device: torch.device | str | None = None) -> dict[str, float]:
    """{name: value} of the measures named (all of MEASURES by default; those that need the
    initial weights `init` only when it is given), each exactly what its function returns
    (the value of an estimate, sigma of pac_bayes_sigma) with the same loss, params, seed and
    device where it takes them, and the keyword options given for it in `options`
    ({"worst_case_sharpness": {"rho": 0.1, "m": 128}}; the adaptive and magnitude-aware entries
    take their own). The data are read once: a DataLoader's batches are kept for every measure
    when they fit in memory (sources.LoaderSource)."""
    check_loss(loss)
    options = options or {}
    unknown = [n for n in [*(names or ()), *options] if n not in MEASURES]
    if unknown:
        raise BadInput(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}")
    needs_init = [n for n in (names or ()) if MEASURES[n].takes == "init"]
    if init is None and needs_init:
        raise BadInput(f"{needs_init[0]} needs the initial weights (init=state dict)")
    for name, given in options.items():
        MEASURES[name].check(given, name)
    if names is None:
        names = [n for n, entry in MEASURES.items() if init is not None or entry.takes != "init"]
    with _prepared(model, params, device) as (_, state):
        first = next(iter(state.values()))
        source = as_source(data, device=first.device, dtype=_dtype(state))
    given = dict(zip(COMMON, (loss, params, seed, device)))
    found = {}
    for name in names:
        try:
            found[name] = MEASURES[name](model, source, init, given, options.get(name, {}))
        except BadInput as err:  # which measure, and how to set it or leave it out
            raise BadInput(f"{name}: {err} (options={{{name!r}: {{...}}}} sets its arguments; "
                           f"names= without it leaves it out)") from None
    return found
