"""Table 2's runs kept small: what `landscape table` chooses by, without the run files.

A run file of the paper's model is ~36 MB (its weights and resume state); choosing b needs only each
run's config and three metrics per epoch (validation accuracy, noisy and clean test accuracy). This
keeps those of finished runs in a compressed .npz (~50 KB a trial of 51 runs) that can be committed,
and prints the table from any set of archives with the library's own selection (the same numbers
`landscape table` prints from the run files).

    python analysis/table2/archive.py save checkpoints/table2-rest/sinusoid-noise0.01-seed0 OUT.npz
    python analysis/table2/archive.py table analysis/table2/runs/*.npz [--early-stopping]
    python analysis/table2/archive.py trials analysis/table2/runs/*.npz [--early-stopping]
    python analysis/table2/archive.py compare analysis/table2/runs/rest-*.npz

`compare` prints ours beside the paper's numbers (paper.csv), without and with early stopping.

`trials` prints each trial's baseline and chosen run (epoch, validation and test accuracy): what a
mean over trials hides, e.g. how far the chosen run's validation accuracy overstates its test
accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from landscape.analysis.selection import format_table, markdown_table, select
from landscape.config import RunConfig
from landscape.runs.folders import find_runs
from landscape.runs.store import Run

KEPT = ("val_acc", "test_acc", "test_acc_clean")
PAPER = Path(__file__).with_name("paper.csv")


def save(folders: list[str], out: Path) -> int:
    """Archive the finished runs of the folders; returns how many (unfinished ones are left out)."""
    runs = [r for r in (Run(p) for p in find_runs(folders)) if r.status == "complete"]
    arrays = {"configs": np.array(json.dumps([r.config.to_json() for r in runs]))}
    for i, run in enumerate(runs):
        metrics = run.metrics()
        for name in KEPT:
            arrays[f"{i}/{name}"] = metrics[name]
    np.savez_compressed(out, **arrays)
    return len(runs)


def records(paths: list[str]):
    """(config, metrics) of every archived run, as `selection.select` takes them."""
    for path in paths:
        with np.load(path) as archive:
            for i, config in enumerate(json.loads(str(archive["configs"]))):
                yield RunConfig.from_json(config), {n: archive[f"{i}/{n}"] for n in KEPT}


TRIAL_HEADER = ("setting", "seed", "baseline epoch", "baseline val", "baseline test", "chosen b",
                "chosen epoch", "chosen val", "chosen test", "gain", "chosen val - test",
                "baseline val - test", "oracle b", "oracle gain")


def trial_rows(results) -> list[tuple]:
    """One row per trial (TRIAL_HEADER): accuracies in %; the gain is chosen minus baseline test;
    the oracle is the level with the best test accuracy (selection.TrialChoice.oracle), its gain
    the most that choosing b could have given at the levels' own epochs."""
    rows = []
    for result in results:
        for t in result.trials:
            base, chosen, oracle = t.baseline, t.chosen, t.oracle
            rows.append((f"{result.config.data.name} {result.config.data.noise:.0%}", t.seed,
                         base.epoch, 100 * base.val_acc, 100 * base.test_acc,
                         chosen.flood, chosen.epoch, 100 * chosen.val_acc, 100 * chosen.test_acc,
                         100 * (chosen.test_acc - base.test_acc),
                         100 * (chosen.val_acc - chosen.test_acc),
                         100 * (base.val_acc - base.test_acc),
                         oracle.flood, 100 * (oracle.test_acc - base.test_acc)))
    return rows


def paper_table(path: Path = PAPER) -> dict[tuple[str, float, str], dict[str, float]]:
    """The paper's Table 2: (data, noise, "last" | "early") -> its numbers (% and b)."""
    with open(path) as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {(r["data"], float(r["noise"]), r["stopping"]):
                {k: float(v) for k, v in r.items() if k not in ("data", "noise", "stopping")}
                for r in rows}


COMPARE_HEADER = ("setting", "stopping", "trials", "ours w/o", "paper w/o", "ours w/", "paper w/",
                  "ours gain", "paper gain", "ours oracle gain", "ours b", "paper b")


def compare_rows(archives: list[str], paper: dict) -> list[tuple[str, ...]]:
    """Ours (mean (std) over the trials) beside the paper's, per setting and stopping rule; the
    gains are means over trials, the oracle's that of TrialChoice.oracle."""
    rows = []
    for stopping in ("last", "early"):
        for r in select(records(archives), early_stopping=stopping == "early"):
            data = r.config.data
            theirs = paper[(data.name, data.noise, stopping)]
            gain = r.values("with_flooding") - r.values("without_flooding")
            oracle = np.array([t.oracle.test_acc - t.baseline.test_acc for t in r.trials])
            rows.append((f"{data.name} {data.noise:.0%}", stopping, str(len(r.trials)),
                         _ours(r, "without_flooding"), _theirs(theirs, "without"),
                         _ours(r, "with_flooding"), _theirs(theirs, "with"),
                         f"{100 * gain.mean():+.2f}", f"{theirs['with'] - theirs['without']:+.2f}",
                         f"{100 * oracle.mean():+.2f}",
                         _ours(r, "chosen_b", scale=1), _theirs(theirs, "b")))
    return rows


def _ours(result, column: str, *, scale: float = 100) -> str:
    mean, std = result.mean_std(column)
    return f"{mean * scale:.2f}" + ("" if math.isnan(std) else f" ({std * scale:.2f})")


def _theirs(row: dict[str, float], key: str) -> str:
    return f"{row[key]:.2f} ({row[key + '_std']:.2f})"


def markdown(header: tuple[str, ...], rows: list[tuple]) -> str:
    """`selection.markdown_table`, with numbers to two decimals."""
    return markdown_table(header, [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row]
                                   for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save", help="archive the finished runs of sweep folders")
    saving.add_argument("folders", nargs="+")
    saving.add_argument("out", type=Path)
    table = commands.add_parser("table", help="Table 2 from archives")
    table.add_argument("archives", nargs="+")
    table.add_argument("--early-stopping", action="store_true")
    trials = commands.add_parser("trials", help="each trial's baseline and chosen run")
    trials.add_argument("archives", nargs="+")
    trials.add_argument("--early-stopping", action="store_true")
    comparing = commands.add_parser("compare", help="ours beside the paper's Table 2")
    comparing.add_argument("archives", nargs="+")
    args = parser.parse_args()
    if args.command == "save":
        print(f"{save(args.folders, args.out)} finished runs -> {args.out}", file=sys.stderr)
    elif args.command == "compare":
        print(markdown(COMPARE_HEADER, compare_rows(args.archives, paper_table())))
    else:
        results = select(records(args.archives), early_stopping=args.early_stopping)
        print(format_table(results) if args.command == "table"
              else markdown(TRIAL_HEADER, trial_rows(results)))


if __name__ == "__main__":
    main()
