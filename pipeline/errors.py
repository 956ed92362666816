"""One exception hierarchy. Every message says what was seen, where, and what to do.

Exit codes, the same for every command (DESIGN.md section 11): 2 for everything a user asked that cannot be
done as asked (`UsageError` and its subclasses: options, config, run directories, weights, the cluster's
address); 1 for a run that finished with failed or missing pairs, a regression, or a command stopped by a
file it could not write (`WriteError`: disk full, I/O error).
"""

from __future__ import annotations


class IQAError(Exception):
    """Base class of every error the user can act on; the CLI prints its message as one line."""

    exit_code = 1


class UsageError(IQAError):
    """Bad command-line arguments, options that cannot be combined, missing input folders."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or value that cannot be used (unknown key, wrong type, bad YAML)."""


class ImageError(IQAError):
    """One image cannot be read or used; becomes an error row for its pair, never a crash of the run."""


class WeightsError(UsageError):
    """Network weights (LPIPS backbone or linear layers) are missing, unreadable, do not hash to the prefix in
    their name, or do not match the architecture: a configuration problem, found before any pair is scored."""


class RunDirError(UsageError):
    """The run directory cannot be written, or already holds a different run."""


class WriteError(IQAError):
    """A file cannot be written while a command runs (disk full, I/O error): the command stops (exit 1)."""


class StorageError(UsageError):
    """Object storage refuses a command: a missing bucket, missing credentials, denied access, an endpoint
    that does not answer. Found before any pair is scored where the run can check it."""


class ClusterError(UsageError):
    """The Dask scheduler cannot be reached or the cluster cannot be started."""


class NotComparableError(UsageError):
    """Two runs whose values follow different definitions (convention, crop, metric settings).

    Attributes:
        differences: one phrase per difference, e.g. 'convention default vs sr-paper'.
    """

    def __init__(self, differences: list[str], hint: str) -> None:
        self.differences = list(differences)
        super().__init__(f"Runs are not comparable: {'; '.join(self.differences)}. {hint}")
