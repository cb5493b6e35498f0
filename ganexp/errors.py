"""Errors reported to the user as one line, with no traceback."""


class GanexpError(Exception):
    """A problem the user can act on; its message is the whole report."""

    exit_code = 1


class ConfigError(GanexpError, ValueError):
    """A value the user typed (or a file they pointed at) cannot be used.

    Names the key, the value and what is allowed; raised before any training starts.
    """

    exit_code = 2

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={value!r}: {allowed}")


class RunFailed(GanexpError):
    """Training stopped on a fault (non-finite values, a failed checkpoint write)."""


class Interrupted(GanexpError):
    """SIGTERM or SIGINT: the run saved a checkpoint and stopped; the same command continues."""

    def __init__(self, signum: int, step: int) -> None:
        import signal

        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}; checkpoint saved, run the same command to continue"
        )


class StopRequested(Exception):
    """A stop signal came inside a step (between critic iterations) or inside a hook (between
    evaluation batches): the work in progress is abandoned, not finished."""
