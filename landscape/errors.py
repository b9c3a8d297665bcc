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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's preemption notice), raised where the program is, like Ctrl-C: the
    epoch in flight is abandoned uncommitted and the run files are closed on the way out."""
