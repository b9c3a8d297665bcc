"""The two ways work can fail, so that the CLI maps each to its exit code and one line on stderr."""


class LandscapeError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class BadInput(LandscapeError):
    """Wrong options, missing or foreign files, unsaved epochs: the user can fix it (exit code 2)."""

    exit_code = 2


class WorkFailed(LandscapeError):
    """The work itself failed, e.g. a run diverged (exit code 1)."""

    exit_code = 1


def require(condition: bool, message: str) -> None:
    """Bad input unless `condition`: the validation of configs and options."""
    if not condition:
        raise BadInput(message)


def require_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    require(value in choices, f"unknown {what} {value!r}; choose from {', '.join(choices)}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's preemption notice), raised where the program is, like Ctrl-C: the
    epoch in flight is abandoned uncommitted and the run files are closed on the way out."""


# An interrupt raised by a signal handler while Python runs a finalizer (a weakref callback, which
# h5py runs for every object it drops: several per run-file write) is printed and dropped, so a
# SIGTERM or Ctrl-C could go unanswered. The CLI's handlers note it here too, and long loops call
# `raise_pending` at safe points, which raises it again if it was lost.
_pending: list[KeyboardInterrupt] = []


def interrupt(error: KeyboardInterrupt) -> None:
    """For a signal handler: raise `error` now, and again at the next `raise_pending`."""
    _pending[:] = [error]
    raise error


def quiet_when_pending(unraisable, fallback) -> None:
    """A sys.unraisablehook: an interrupt that a finalizer dropped is not printed (it is raised
    again at the next safe point, and the user gets one line); anything else goes to `fallback`."""
    if not (_pending and unraisable.exc_value is _pending[0]):
        fallback(unraisable)


def raise_pending() -> None:
    """Raise the interrupt a signal handler raised, if it was lost on the way (see above)."""
    if _pending:
        raise _pending[0]


def clear_pending() -> None:
    """The interrupt was answered (the CLI's last step)."""
    _pending.clear()
