"""Error types shared by every tlbench layer.

The CLI prints one line for any :class:`TlbenchError` and exits with status 2;
anything else is a bug and shows its traceback.
"""


class TlbenchError(Exception):
    """Base class of every error that tlbench raises on purpose."""


class ConfigError(TlbenchError, ValueError):
    """A configuration value or command-line flag is invalid."""


class DatasetError(TlbenchError):
    """A dataset is missing, incomplete or laid out differently than expected."""


class ImageDecodeError(DatasetError):
    """An image file could not be decoded (empty, truncated or not an image)."""


class DownloadError(TlbenchError):
    """A download failed or its checksum did not match."""


class ModelError(TlbenchError):
    """A model name is unknown or weights do not fit the model."""


class DivergenceError(TlbenchError):
    """Training produced a NaN or infinite loss."""


class ExportError(TlbenchError):
    """Exporting a model failed, or the exported model disagrees with dygraph."""


class IntegrityError(TlbenchError):
    """A file on disk does not match the checksum recorded for it."""


class BackendUnavailableError(TlbenchError):
    """The requested inference backend cannot run with the installed Paddle."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, ``timeout``, Slurm, Kubernetes); handled like Ctrl-C, exit status 143."""
