"""Progress bars with ETA on stderr for long work (training, analyses)."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Iterator, TypeVar

import click

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, enabled: bool = True, label: str = "",
                 length: int | None = None) -> contextlib.AbstractContextManager[Iterator[T]]:
    """click's progress bar on stderr (it shows the ETA), or a plain iterator when disabled or when
    stderr is not a terminal (logs stay clean)."""
    if not enabled or not sys.stderr.isatty():
        return contextlib.nullcontext(iter(items))
    return click.progressbar(items, length=length, label=label, file=sys.stderr, show_eta=True,
                             show_pos=True)
