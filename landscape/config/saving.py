"""Which epochs' parameters a run keeps in its file: the save policies."""

from __future__ import annotations

from landscape.errors import BadInput, require, require_choice

SAVE_POLICIES = ("all", "last", "none", "log")


def save_epochs(policy: str, epochs: int) -> tuple[int, ...]:
    """Epochs whose parameters a run keeps. Epoch 0 (the initial weights) is always kept.

    policy: "all", "last", "none" (initial weights only), "log" (about 30 log-spaced epochs and the
    last), "every:N" (every N-th epoch and the last) or "epochs:E,E,..." (those and the last).
    """
    kind, _, arg = policy.partition(":")
    if kind == "all":
        chosen = set(range(epochs + 1))
    elif kind == "last":
        chosen = {epochs}
    elif kind == "none":
        chosen = set()
    elif kind == "log":
        chosen = {int(round(epochs ** (i / 29))) for i in range(30)} | {epochs}
    elif kind == "every":
        every = int(arg)
        chosen = set(range(every, epochs + 1, every)) | {epochs}
    elif kind == "epochs":
        chosen = {int(e) for e in arg.split(",") if e.strip()} | {epochs}
    else:
        raise BadInput(f"unknown save policy {policy!r}")
    return tuple(sorted(chosen | {0}))


def check_save_policy(policy: str, epochs: int) -> None:
    kind, _, arg = policy.partition(":")
    try:
        if kind == "every":
            require(int(arg) >= 1, "--save-every must be >= 1")
        elif kind == "epochs":
            listed = [int(e) for e in arg.split(",") if e.strip()]
            require(bool(listed), "--save-epochs needs at least one epoch")
            bad = [e for e in listed if not 0 <= e <= epochs]
            require(not bad, f"--save-epochs lists epochs outside 0..{epochs}: {bad}")
        else:
            require_choice(kind, SAVE_POLICIES, "save policy")
    except ValueError:
        raise BadInput(f"malformed save policy {policy!r}: epochs must be integers") from None
