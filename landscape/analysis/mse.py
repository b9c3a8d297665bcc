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

The Monte-Carlo check itself is measures/theorem1.py; this module picks the pool for a run, writes
the result file and reports it; figures/mse.py draws it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from landscape import data as data_module
from landscape.analysis.loading import dataset_for, model_for, state_at
from landscape.config import SYNTHETIC
from landscape.data import Split
from landscape.device import dtype_of
from landscape.errors import BadInput
from landscape.figures.mse import read_check
from landscape.measures.evaluation import sample_losses
from landscape.measures.options import MseOptions
from landscape.measures.sources import as_source
from landscape.measures.theorem1 import GRID_POINTS, Check, check_panels
from landscape.memory import DRAW_NUMBERS, refuse_unless_fits, rows_for
from landscape.results import MSE, PANELS, reuse_result, runs_identity, write_result
from landscape.runs.store import Run

KIND = MSE
POOL_SEED_OFFSET = 1_000_003  # default pool data seed = the run's data seed + this


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
    pool = data_module.load(fresh, device=device, dtype=dtype_of(run.config.dtype)).test
    return pool, (f"{options.pool_size} fresh draws of {c.name} (data seed {seed}, "
                  f"noise {c.noise:g})")


def check_fits(samples: int, flood_levels: int, *, device: torch.device,
               pool_points: int = 0, pool_row_bytes: int = 0) -> None:
    """Bad input, with the estimate, before any work, when the M draws or the pool cannot fit:
    two panels' M float64 draws, kept and written (mse_panel's chunks are bounded, about 5 x
    DRAW_NUMBERS float64 entries), and a fresh synthetic pool made on the device with its
    per-sample losses."""
    chunks = 5 * DRAW_NUMBERS * 8
    refuse_unless_fits(samples * 4 * 8 + chunks, torch.device("cpu"),
                       f"--samples {samples:,} over {flood_levels} flood levels")
    refuse_unless_fits(pool_points * pool_row_bytes, device, f"--pool-size {pool_points:,}")


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
               * dtype_of(c.dtype).itemsize * 2 + 24)
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


def report(path: str | Path) -> str:
    """What the check found, in words: R, the identity, the sign claim, where flooding helped."""
    attrs, a = read_check(path)
    at = f" at epoch {attrs['epoch']}" if "epoch" in attrs else ""  # a checkpoint may not say
    lines = [f"g = {attrs['run']}{at}; R = {attrs['risk']:.5f} "
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


