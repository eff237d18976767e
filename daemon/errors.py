"""Errors a user can act on. Each names the thing that is wrong (file, field, source, model)."""


class DaemonError(Exception):
    """Base of every error reid-daemon raises on purpose."""


class ConfigError(DaemonError):
    """The configuration is missing, unreadable or invalid."""


class SourceError(DaemonError):
    """A frame source cannot be opened or has failed for good."""


class ModelError(DaemonError):
    """A model is missing, corrupt, or cannot be loaded."""


class DataError(DaemonError):
    """An input data file (detections, ground truth, gallery) is malformed."""


class LockTimeout(DataError):
    """A file's lock stayed held by another process longer than the wait allowed (a writer stopped or stuck),
    or was held by one not to be waited for; ``holder``: who its lock file says holds it (``gallery.Holder``),
    None where it says nobody."""

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


def exit_code(error: DaemonError) -> int:
    """The exit status of a command that ends on ``error``: 2 for a configuration error (the systemd units do
    not restart on it), 1 for any other (a model missing or broken, a source down, bad data), as the CLI ends.
    """
    return 2 if isinstance(error, ConfigError) else 1
