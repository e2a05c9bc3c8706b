"""The one exception type for bad input: its message names the thing and the fix."""


class MergeInputError(ValueError):
    """Raised for user-fixable problems (paths, names, shapes, parameters, statistics)."""
