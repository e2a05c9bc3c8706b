"""The one exception type for bad merge input: its message names the thing and the fix."""

from mergeeval.errors import InputError


class MergeInputError(InputError):
    """Raised for user-fixable problems (paths, names, shapes, parameters, statistics)."""
