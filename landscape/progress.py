"""Progress on stderr for long work (training, analyses): a bar with ETA on a terminal, and an
occasional plain line in a log (a Slurm job's output, nohup), where a bar's redraws would be noise."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

import click

T = TypeVar("T")

LOG_EVERY = 60.0  # seconds between progress lines when stderr is not a terminal


def progress_bar(items: Iterable[T], *, enabled: bool = True, label: str = "",
                 length: int | None = None, show: Callable[[], str] | None = None
                 ) -> contextlib.AbstractContextManager[Iterator[T]]:
    """click's progress bar on stderr (it shows the ETA); when stderr is not a terminal, a line
    "label: i/n (p%), elapsed, ETA" at most every LOG_EVERY seconds; nothing when disabled.
    `show`: a text to add to the bar or line (e.g. what tracking costs so far)."""
    if not enabled:
        return contextlib.nullcontext(iter(items))
    if not sys.stderr.isatty():
        return contextlib.nullcontext(_logged(items, label, length, show))
    return click.progressbar(items, length=length, label=label, file=sys.stderr, show_eta=True,
                             show_pos=True, item_show_func=show and (lambda _: show()))


def _logged(items: Iterable[T], label: str, length: int | None,
            show: Callable[[], str] | None = None) -> Iterator[T]:
    items = list(items) if length is None and not hasattr(items, "__len__") else items
    total = length if length is not None else len(items)  # type: ignore[arg-type]
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY and done < total:
            last = now
            elapsed = now - start
            eta = elapsed / done * (total - done)
            extra = show() if show else ""
            print(f"{label}: {done}/{total} ({100 * done // total}%), {_duration(elapsed)} "
                  f"elapsed, ETA {_duration(eta)}" + (f", {extra}" if extra else ""),
                  file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
