"""How many CPU threads a process gives torch: one, unless told otherwise.

This package's models are small (a 5 x 500 MLP, a few hundred points a batch): a second thread
gains them little, and on a shared or busy CPU OpenMP's threads wait for each other, so that torch's
default (a thread per core) made `train` and `flatness` 4-13 times slower than one thread (flatness
of an MNIST run: 47-60 s against 4.4 s; the demo: 48 s against 10 s for 100 epochs). Big models
on a free machine gain from more: `landscape --threads N`, LANDSCAPE_THREADS or OMP_NUM_THREADS.

No torch here: the command applies the choice before its lazy import of torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Mapping

from landscape.errors import BadInput

DEFAULT_THREADS = 1
ENVIRONMENT = "LANDSCAPE_THREADS"


def chosen_threads(given: str | int | None = None,
                   environ: Mapping[str, str] = os.environ) -> int:
    """The threads of one process: `given` (--threads), else LANDSCAPE_THREADS, else
    OMP_NUM_THREADS (torchrun sets it for its workers), else DEFAULT_THREADS."""
    for value, what in ((given, "--threads"), (environ.get(ENVIRONMENT), ENVIRONMENT),
                        (environ.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")):
        if value is not None and str(value).strip():
            return _count(str(value), what)
    return DEFAULT_THREADS


def _count(text: str, what: str) -> int:
    # OpenMP's variable may list the threads of nested levels ("4,2"): the first is ours.
    first = text.split(",")[0].strip() if what == "OMP_NUM_THREADS" else text.strip()
    try:
        count = int(first)
    except ValueError:
        count = 0
    if count < 1:
        raise BadInput(f"{what} must be a whole number of threads >= 1, got {text!r}")
    return count


@contextlib.contextmanager
def using_threads(count: int) -> Iterator[None]:
    """torch uses `count` threads in the block: through OMP_NUM_THREADS for a torch imported
    later (torch then caps it at the CPU's cores) and for child processes, and directly where
    torch is loaded already. Both are restored after (a command run inside a Python session)."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(count)
    torch = sys.modules.get("torch")
    loaded = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before
        torch = sys.modules.get("torch")
        if torch is not None and loaded is not None:
            torch.set_num_threads(loaded)
