"""Scale-out under torchrun (docs/guides/scale-out.md): which share of the work this process does, and
the few collectives that hold the shares together.

torchrun (by hand, or on several nodes through its rendezvous, e.g. under Slurm) starts one
process per GPU or CPU slot and tells each its RANK, WORLD_SIZE and LOCAL_RANK. A sweep or an
analysis is a list of independent pieces (runs, saved epochs, slice points): every rank builds the
same list, takes its own contiguous share, works alone, and exchanges only small Python objects
(what failed, the runs' statuses, an analysis's numbers). Without torchrun the world has size 1:
no process group, and every collective here returns at once.

The backend is gloo, on GPUs too: no tensor is ever reduced on a device, so NCCL would only copy
these objects to the GPU and back; gloo also lets several ranks share one GPU, and it raises at
once when a peer's process ends, where NCCL waits for its watchdog.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from landscape.errors import BadInput, LandscapeError, WorkFailed

T = TypeVar("T")

# How long a rank may wait in a collective. A rank that finished its share waits for the slowest
# one (hours, for ResNet-44 runs), so this must be long; it never has to catch a failure: a rank
# that raises still reaches the exchange (see `exchange`), and a dead one is noticed at once by
# gloo and stopped by torchrun.
WAIT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0    # the rank among this node's processes: which GPU is its own


def current() -> World:
    """This process's place, from the environment torchrun sets (size 1 without torchrun)."""
    env = os.environ
    if "WORLD_SIZE" not in env:  # a stray RANK (some schedulers set one) is not a launch
        return World()
    try:
        rank, size = int(env.get("RANK", 0)), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise BadInput("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)"
                       ) from None
    if not 0 <= rank < size:
        raise BadInput(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local_rank)


def join() -> World:
    """This process's place, joining the process group first when there are other ranks."""
    world = current()
    if world.size > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if not dist.is_available():
            missing.append("torch.distributed (not in this torch build)")
        if missing:
            raise BadInput(f"WORLD_SIZE is {world.size} but there is no {', '.join(missing)}: "
                           "launch the ranks with torchrun")
        dist.init_process_group("gloo", timeout=WAIT)
        atexit.register(leave, together=False)  # a failure outside the exchanges
    return world


def leave(*, together: bool) -> None:
    """Leave the process group, if this process joined one. `together`: every rank is known to be
    at this same point (the command ended, or failed in an exchange), so the ranks first wait for
    one another, and no rank tears its connections down while a peer still works."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if together:
        try:
            dist.barrier()
        except RuntimeError:  # a peer's process has ended: nobody left to wait for
            pass
    dist.destroy_process_group()


def end(code: int, *, together: bool) -> None:
    """Under torchrun, leave the process group (see `leave`) and end the process at once with
    `code`, skipping the interpreter's and the C++ runtime's teardown: there gloo's threads can
    abort the process ("terminate called without an active exception", with no Python frame
    left), as they did in about 1 of 10 two-rank runs on a loaded 2-core CPU even after a clean
    barrier and destroy_process_group. Every file is closed by then. Without a process group,
    returns (the caller exits normally)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    leave(together=together)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank's own GPU: under torchrun, `cuda` becomes cuda:LOCAL_RANK. The CPU, and a GPU the
    user named by index, stay as asked."""
    if world.size == 1 or device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise BadInput(f"local rank {world.local_rank} has no GPU of its own ({count} visible); "
                       "start at most one process per GPU on each node (--nproc-per-node)")
    device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)  # for anything that uses the current device implicitly
    return device


def share(items: Sequence[T], world: World) -> list[T]:
    """This rank's contiguous part of `items` (sizes differ by at most one). Contiguous, not
    round-robin: neighbours in a plan tend to share a data draw and an ensemble group."""
    bounds = [len(items) * r // world.size for r in range(world.size + 1)]
    return list(items[bounds[world.rank]:bounds[world.rank + 1]])


def in_rounds(items: Sequence[T], world: World) -> list[T | None]:
    """This rank's share, padded with None so that every rank takes the same number of rounds
    (each round ends in an exchange)."""
    mine: list[T | None] = list(share(items, world))
    return mine + [None] * (math.ceil(len(items) / world.size) - len(mine))


class RankFailed(LandscapeError):
    """Another rank's failure, raised on this rank too, with that rank's exit code."""

    def __init__(self, rank: int, exit_code: int, text: str) -> None:
        super().__init__(f"rank {rank}: {text}")
        self.exit_code = exit_code
        self.exchanged = True


class Share:
    """What this rank's block produced (`value`); after the block, every rank's (`values`)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.values: list[Any] = []


@contextlib.contextmanager
def exchange(world: World) -> Iterator[Share]:
    """Run the block, then exchange its outcome among all ranks: `values` lists every rank's
    `value` in rank order. A failure in any rank's block is raised on every rank, once each has
    finished its own block (so the others' work is complete and nobody waits forever). Every rank
    must pass through the same exchanges in the same order."""
    result = Share()
    try:
        yield result
    except Exception as err:
        if world.size > 1 and not getattr(err, "exchanged", False):
            err.exchanged = True  # an enclosing exchange must not send it again
            text = str(err) if isinstance(err, LandscapeError) else f"{type(err).__name__}: {err}"
            code = err.exit_code if isinstance(err, LandscapeError) else 1
            _all_gather(world, ("failed", world.rank, code, text.splitlines()[0]))
        raise
    outcomes = _all_gather(world, ("ok", result.value))
    for outcome in outcomes:
        if outcome[0] == "failed":
            raise RankFailed(*outcome[1:])
    result.values = [value for _, value in outcomes]


@contextlib.contextmanager
def rank_zero_first(world: World, when: bool = True) -> Iterator[None]:
    """Rank 0 runs the block before the others (e.g. downloads the files they then read)."""
    if not when or world.size == 1:
        yield
    elif world.rank == 0:
        with exchange(world):
            yield
    else:
        with exchange(world):
            pass
        yield


def _all_gather(world: World, obj: Any) -> list[Any]:
    if world.size == 1:
        return [obj]
    gathered: list[Any] = [None] * world.size
    try:
        dist.all_gather_object(gathered, obj)
    except RuntimeError as err:  # gloo: a peer's process ended (killed, or died in native code)
        raise WorkFailed("lost contact with another rank (did its process end?): "
                         f"{str(err).splitlines()[0]}") from None
    return gathered
