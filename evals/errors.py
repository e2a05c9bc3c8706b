"""User-fixable evaluation errors: one message that names the thing and the fix."""

from mergeeval.errors import InputError


class EvalInputError(InputError):
    pass
