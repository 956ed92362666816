"""One exception hierarchy. Every message says what was seen, where, and what to do."""

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


class WeightsError(IQAError):
    """Network weights (LPIPS backbone or linear layers) are missing, unreadable, do not hash to the prefix in
    their name, or do not match the architecture: a configuration problem, found before any pair is scored."""

    exit_code = 2


class RunDirError(IQAError):
    """The run directory cannot be written, or already holds a different run."""


class ClusterError(IQAError):
    """The Dask scheduler cannot be reached or the cluster cannot be started."""
