"""Theorem 1 on a trained model (paper Sec. 5.4, proof in Appendix A; docs/measurements.md): the flooded
risk estimator R~ = |R^ - b| + b has no larger mean squared error than the empirical risk R^ when
b <= R, the true risk; strictly smaller if b < R and Pr[R^ < b] > 0.

For a fixed g (a checkpoint), R is the mean loss over a large pool independent of g's training data:
fresh draws from the synthetic generator under another data seed, with the run's label noise; for
data sets without a generator, the held-out test split. The M samples of size n are i.i.d. index
draws from the pool, so R is exactly the expectation of R^ over the draws: the theorem's premise holds
for the draws as it does for the population the pool stands for. Per-sample losses are computed once.

Per draw, (R^ - R)^2 - (R~ - R)^2 = 4 (b - R^)(R - b) 1[R^ < b] (Appendix A, Eq. 15-18), so the
difference of the Monte-Carlo MSEs equals the mean of that term exactly; both the identity and the
sign claim are verified on the draws. A second panel measures R^ on g's own training set (bootstrap
draws of size n), biased low because g was fit to it: there b between the training loss and R lowers
the error.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import data as data_module
from ..config import SYNTHETIC
from ..data import Split
from ..errors import BadInput
from ..sources import as_source
from ..progress import progress_bar
from ..store import Run
from ..evaluation import rows_for, sample_losses
from .loading import (dataset_for, model_for, read_result, refuse_unless_fits, reuse_result,
                      runs_identity, state_at, write_result)
from .options import MseOptions  # noqa: F401 - re-exported: where it was
from .plotting import FLOODED, FORMATS, PALETTE, PLAIN, figure, save_figure

KIND = "mse"
PANELS = ("pool", "train")  # R^ on fresh samples (unbiased), on g's own training set (biased low)
POOL_SEED_OFFSET = 1_000_003  # default pool data seed = the run's data seed + this
GRID_POINTS = 201


def flooded_risk(risk_hat: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """R~ = |R^ - b| + b (Appendix A, Eq. 10)."""
    return np.abs(risk_hat - b) + b


def gain_term(risk_hat: np.ndarray, risk: float, b: np.ndarray | float) -> np.ndarray:
    """(R^ - R)^2 - (R~ - R)^2 per draw, in closed form: 4 (b - R^)(R - b) 1[R^ < b]
    (Appendix A, B of Eq. 15-18 with the sign of MSE(R^) - MSE(R~))."""
    return 4 * (b - risk_hat) * (risk - b) * (risk_hat < b)


@dataclass(frozen=True)
class Panel:
    """MSEs over a grid of b of one set of draws of R^ against the risk R."""

    risk_hat: np.ndarray      # [M] the draws
    mse_plain: float          # MSE(R^)
    mse_flooded: np.ndarray   # [G] MSE(R~) per b
    gain: np.ndarray          # [G] mean over draws of gain_term
    below: np.ndarray         # [G] share of draws with R^ < b
    identity_error: float     # max over draws and b of |per-draw identity residual|


def mse_panel(risk_hat: np.ndarray, risk: float, flood: np.ndarray, *, progress: bool = False,
              label: str = "MSEs") -> Panel:
    """The Monte-Carlo MSEs of R^ and R~ (float64), and the per-draw identity's largest residual;
    in chunks of draws, so that the [draws, G] terms stay near 4M entries whatever M is."""
    risk_hat = np.asarray(risk_hat, dtype=np.float64)
    flood = np.asarray(flood, dtype=np.float64)
    rows = max(1, (1 << 22) // max(len(flood), 1))
    plain, flooded, gains, below = 0.0, np.zeros(len(flood)), np.zeros(len(flood)), 0
    residual = 0.0
    with progress_bar(range(0, len(risk_hat), rows), enabled=progress, label=label) as starts:
        for s in starts:
            r = risk_hat[s:s + rows, None]
            err_plain = (r - risk) ** 2                                # [m, 1]
            err_flooded = (flooded_risk(r, flood) - risk) ** 2         # [m, G]
            gain = gain_term(r, risk, flood)                           # [m, G]
            plain += float(err_plain.sum())
            flooded += err_flooded.sum(0)
            gains += gain.sum(0)
            below = below + (r < flood).sum(0)
            residual = max(residual, float(np.abs(err_plain - err_flooded - gain).max()))
    m = len(risk_hat)
    return Panel(risk_hat, plain / m, flooded / m, gains / m, below / m, residual)


@dataclass(frozen=True)
class Claims:
    """Theorem 1's statements checked on one panel's draws."""

    tolerance: float                    # float64 rounding allowance for equalities
    identity_error: float               # max per-draw residual of the identity
    difference_error: float             # max over b of |(MSE(R^) - MSE(R~)) - mean gain|
    sign_levels: int                    # grid levels with b <= R
    sign_violations: tuple[float, ...]  # b <= R where MSE(R~) > MSE(R^)
    strict_levels: int                  # b < R with some draw R^ < b
    strict_violations: tuple[float, ...]
    helpful_up_to: float                # largest b of the grid with MSE(R~) < MSE(R^); NaN if none
    best_b: float                       # the b of smallest MSE(R~)
    best_mse: float

    @property
    def identity_holds(self) -> bool:
        return max(self.identity_error, self.difference_error) <= self.tolerance

    @property
    def holds(self) -> bool:
        return self.identity_holds and not self.sign_violations and not self.strict_violations

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "identity_holds": self.identity_holds,
                "holds": self.holds}


def check_claims(panel: Panel, risk: float, flood: np.ndarray) -> Claims:
    """Eq. (8): b <= R => MSE(R~) <= MSE(R^); Eq. (9): strict when b < R and Pr[R^ < b] > 0
    (here: some draw below b); and MSE(R^) - MSE(R~) = mean of gain_term, exactly."""
    # errors are squares of numbers up to |R~| <= 2b + |R^|; means of M of them round at ~1e-14
    scale = max(1.0, abs(risk), 2 * float(np.max(flood, initial=0)) + float(np.abs(panel.risk_hat).max()))
    tolerance = 256 * np.finfo(np.float64).eps * scale ** 2
    difference = panel.mse_plain - panel.mse_flooded
    sign = flood <= risk
    strict = (flood < risk) & (panel.below > 0)
    helpful = flood[difference > 0]
    best = int(np.argmin(panel.mse_flooded))
    return Claims(
        tolerance=float(tolerance), identity_error=panel.identity_error,
        difference_error=float(np.abs(difference - panel.gain).max()),
        sign_levels=int(sign.sum()),
        sign_violations=tuple(float(b) for b in flood[sign & (difference < -tolerance)]),
        strict_levels=int(strict.sum()),
        strict_violations=tuple(float(b) for b in flood[strict & ~(difference > 0)]),
        helpful_up_to=float(helpful.max()) if len(helpful) else math.nan,
        best_b=float(flood[best]), best_mse=float(panel.mse_flooded[best]))


def pool_for(run: Run, options: MseOptions, *, device: torch.device) -> tuple[Split, str]:
    """The population R is measured on, and a description of it."""
    c = run.config.data
    if c.name not in SYNTHETIC:
        test = dataset_for(run, device=device).test
        return test, f"the held-out test split of {c.name} ({len(test)} points)"
    seed = c.seed + POOL_SEED_OFFSET if options.pool_seed is None else options.pool_seed
    if seed == c.seed:
        raise BadInput(f"--pool-seed {seed} is the run's own data seed; the pool must be "
                       "independent of the training data")
    # The generator's test split under another seed: the same distribution and label noise.
    fresh = dataclasses.replace(c, seed=seed, n_train=2, n_val=2, n_test=options.pool_size)
    pool = data_module.load(fresh, device=device, dtype=getattr(torch, run.config.dtype)).test
    return pool, (f"{options.pool_size} fresh draws of {c.name} (data seed {seed}, "
                  f"noise {c.noise:g})")


def draw_means(losses: np.ndarray, samples: int, size: int, rng: np.random.Generator, *,
               progress: bool = False, label: str = "draws") -> np.ndarray:
    """[samples] means of `size` i.i.d. index draws (with replacement) from `losses`; chunked so
    that the index array stays near 4M entries."""
    rows = max(1, (1 << 22) // size)
    with progress_bar(range(0, samples, rows), enabled=progress, label=label) as starts:
        return np.concatenate([losses[rng.integers(0, len(losses), (min(rows, samples - s), size))]
                               .mean(1) for s in starts])


def check_fits(samples: int, flood_levels: int, *, device: torch.device,
               pool_points: int = 0, pool_row_bytes: int = 0) -> None:
    """Bad input, with the estimate, before any work, when the M draws or the pool cannot fit:
    two panels' M float64 draws, kept and written (mse_panel's chunks are bounded, about 5 x 4M
    float64 entries), and a fresh synthetic pool made on the device with its per-sample losses."""
    chunks = 5 * (1 << 22) * 8
    refuse_unless_fits(samples * 4 * 8 + chunks, torch.device("cpu"),
                       f"--samples {samples:,} over {flood_levels} flood levels")
    refuse_unless_fits(pool_points * pool_row_bytes, device, f"--pool-size {pool_points:,}")


def default_grid(risk: float, train_loss: float) -> np.ndarray:
    return np.linspace(0.0, 2 * max(risk, train_loss), GRID_POINTS)


@dataclass(frozen=True)
class Check:
    """Theorem 1 checked on one model's per-sample losses: R, the grid of b, and per panel
    ("pool": R^ on draws from the pool; "train": on the training set, when given) the MSEs and
    the claims."""

    risk: float
    risk_se: float
    train_loss: float           # NaN without training data
    flood: np.ndarray           # [G]
    panels: dict[str, Panel]
    claims: dict[str, Claims]

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.claims.values())


def check_panels(pool_losses: np.ndarray, train_losses: np.ndarray | None, *, sample_size: int,
                 samples: int, flood_grid: Sequence[float] | None, seed: int,
                 progress: bool = False) -> Check:
    """Theorem 1 from per-sample losses: R = the pool's mean loss, M = `samples` draws of R^ of
    `sample_size` each, from the pool and (if given) from the training losses."""
    risk = float(pool_losses.mean())
    train_loss = float(train_losses.mean()) if train_losses is not None else math.nan
    flood = (np.asarray(sorted(flood_grid), dtype=np.float64) if flood_grid
             else default_grid(risk, 0.0 if train_losses is None else train_loss))
    rng = np.random.default_rng(seed)
    given = {"pool": pool_losses, "train": train_losses}
    panels = {name: mse_panel(draw_means(given[name], samples, sample_size, rng,
                                         progress=progress, label=f"{name} draws"), risk, flood,
                              progress=progress, label=f"{name} MSEs")
              for name in PANELS if given[name] is not None}
    return Check(risk, float(pool_losses.std(ddof=1) / math.sqrt(len(pool_losses))), train_loss,
                 flood, panels, {name: check_claims(p, risk, flood) for name, p in panels.items()})


def theorem1_check(run: Run, options: MseOptions, out: str | Path, *, device: torch.device,
                   progress: bool = True, overwrite: bool = False) -> Path:
    """Theorem 1 on the run's model at options.epoch; writes the result file `out` (a result of
    the same run and options there is reused; another is refused unless `overwrite`)."""
    identity = {**runs_identity([run]), **dataclasses.asdict(options)}
    if reuse_result(out, KIND, identity, overwrite=overwrite):
        return Path(out)
    c = run.config
    synthetic = c.data.name in SYNTHETIC  # image sets: the pool is the test split, read anyway
    check_fits(options.samples, len(options.flood_grid) or GRID_POINTS, device=device,
               pool_points=options.pool_size if synthetic else 0,
               pool_row_bytes=math.prod(data_module.input_shape(c.data))
               * getattr(torch, c.dtype).itemsize * 2 + 24)
    dataset = dataset_for(run, device=device)
    model = model_for(run, dataset, device=device)
    state = state_at(run, options.epoch, device=device)
    epoch = run.epochs_done if options.epoch == "last" else options.epoch
    pool, pool_text = pool_for(run, options, device=device)
    loss, rows = run.config.objective.loss, rows_for(model, dataset.input_shape, 1, device)
    pool_losses = sample_losses(model, state, as_source(pool, device=device, dtype=None), loss,
                                rows, progress=progress, label="pool losses")
    train_losses = sample_losses(model, state, as_source(dataset.train, device=device, dtype=None),
                                 loss, rows)
    size = options.sample_size or len(dataset.train)
    check = check_panels(pool_losses, train_losses, sample_size=size, samples=options.samples,
                         flood_grid=options.flood_grid, seed=options.draw_seed,
                         progress=progress)
    attrs = {**{k: v for k, v in dataclasses.asdict(options).items() if k != "flood_grid"},
             "epoch": str(epoch), "sample_size": size, "run": str(run.path),
             "config_digest": run.config.digest(), "pool": pool_text, "pool_points": len(pool),
             "train_points": len(dataset.train), "loss": run.config.objective.loss,
             "identity": identity}
    return write_check(out, check, attrs)


def write_check(out: str | Path, check: Check, attrs: dict) -> Path:
    """A Check as a result file (read_check, plot_mse and report read it)."""
    arrays = {"flood": check.flood}
    for name, p in check.panels.items():
        arrays.update({f"{name}/risk_hat": p.risk_hat, f"{name}/mse_plain": np.float64(p.mse_plain),
                       f"{name}/mse_flooded": p.mse_flooded, f"{name}/gain": p.gain,
                       f"{name}/below": p.below})
    attrs = {**attrs, "risk": check.risk, "risk_se": check.risk_se, "train_loss": check.train_loss,
             "claims": {name: c.to_dict() for name, c in check.claims.items()}}
    return write_result(out, kind=KIND, attrs=attrs, arrays=arrays)


def read_check(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(attrs with "claims" parsed, arrays) of a result file of theorem1_check."""
    attrs, arrays = read_result(path, KIND)
    return {**attrs, "claims": json.loads(attrs["claims"])}, arrays


def report(path: str | Path) -> str:
    """What the check found, in words: R, the identity, the sign claim, where flooding helped."""
    attrs, a = read_check(path)
    lines = [f"g = {attrs['run']} at epoch {attrs['epoch']}; R = {attrs['risk']:.5f} "
             f"(+- {attrs['risk_se']:.5f}, {attrs['pool']}); training loss {attrs['train_loss']:.5f}; "
             f"M = {attrs['samples']} samples of n = {attrs['sample_size']}; "
             f"{len(a['flood'])} flood levels in [{a['flood'].min():g}, {a['flood'].max():g}]"]
    for name, title in zip(PANELS, ("R^ on fresh samples", "R^ on g's training set")):
        c = attrs["claims"][name]
        verdict = "HOLDS" if c["holds"] else "FAILS"
        lines.append(
            f"{title}: MSE(R^) = {float(a[f'{name}/mse_plain']):.3g}; identity residual "
            f"{max(c['identity_error'], c['difference_error']):.2g} (tolerance "
            f"{c['tolerance']:.2g}); sign claim on {c['sign_levels']} levels b <= R, strict on "
            f"{c['strict_levels']}: {verdict}"
            + ("" if c["holds"] else f" (violations at b = {c['sign_violations'] + c['strict_violations']})")
            + f"; flooding lowers the MSE for b up to {c['helpful_up_to']:.4g}, least MSE "
              f"{c['best_mse']:.3g} at b = {c['best_b']:.4g}")
    return "\n".join(lines)


def plot_mse(result_path: str | Path, out_stem: str | Path,
             formats: Sequence[str] = FORMATS) -> list[Path]:
    """MSE(R^) and MSE(R~) against b, R marked: left with R^ on fresh samples, right with R^ on g's
    own training set, where the band between the training loss and R is shaded. Writes
    OUT_STEM.<format> and OUT_STEM.csv (the plotted numbers)."""
    attrs, a = read_check(result_path)
    risk, train_loss, flood = attrs["risk"], attrs["train_loss"], a["flood"]
    fig, axes = figure(columns=2, cols=2, height=2.4)
    hat, tilde = r"$\widehat{R}$", r"$\widetilde{R}$"
    titles = (f"{hat} on fresh samples (n = {attrs['sample_size']})",
              f"{hat} on g's training set (bootstrap, n = {attrs['sample_size']})")
    for ax, name, title in zip(axes[0], PANELS, titles):
        plain = float(a[f"{name}/mse_plain"])
        if name == "train":
            ax.axvspan(min(train_loss, risk), max(train_loss, risk), color=PALETTE["sky"],
                       alpha=0.2, lw=0, label="b between train and test loss")
        ax.plot(flood, a[f"{name}/mse_flooded"], color=FLOODED, label=f"MSE({tilde}), flooded")
        ax.axhline(plain, color=PLAIN, ls="--", label=f"MSE({hat})")
        ax.axvline(risk, color="black", ls=":", lw=1, label="$R$ (pool)")
        ax.set_ylim(0, 2.5 * plain)
        ax.set_xlim(flood.min(), flood.max())
        ax.set_xlabel("flood level b")
        ax.set_title(title + ("" if attrs["claims"][name]["holds"] else " (claim FAILS)"))
    axes[0, 0].set_ylabel("mean squared error")
    for ax in axes[0]:
        ax.legend(loc="upper left")
    csv = {"panel": np.repeat(PANELS, len(flood)), "flood": np.tile(flood, len(PANELS)),
           "mse_flooded": np.concatenate([a[f"{p}/mse_flooded"] for p in PANELS]),
           "mse_plain": np.repeat([float(a[f"{p}/mse_plain"]) for p in PANELS], len(flood)),
           "gain": np.concatenate([a[f"{p}/gain"] for p in PANELS]),
           "below": np.concatenate([a[f"{p}/below"] for p in PANELS]),
           "risk": np.full(len(PANELS) * len(flood), risk),
           "train_loss": np.full(len(PANELS) * len(flood), train_loss)}
    return save_figure(fig, out_stem, csv, formats=formats)
