"""The one error type a user can fix, at the bottom of the dependency order so every package raises it.

`pipeline` (the CLI prints the message and exits with code 2) and `deploy` (the service answers 4xx)
catch it; `signal2image` and `models` raise it without importing either.
"""


class UserError(Exception):
    """Bad configuration, arguments or input: the message names the field, the value and the fix."""
