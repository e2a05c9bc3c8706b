"""User-fixable evaluation errors: one message that names the thing and the fix."""


class EvalInputError(ValueError):
    pass
