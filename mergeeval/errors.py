"""The base of every user-fixable error: its message names the thing and the fix (exit code 2)."""


class InputError(ValueError):
    """Bad input or a refused output: one message, no traceback."""
