"""Errors a user can fix. The CLI prints their message and exits with code 2, never a traceback.

`UserError` lives in `signal2image.errors` and `ExportError` in `deploy.errors` (the lower packages
raise them without importing `pipeline`); they are re-exported here for the training side.
"""

from deploy.errors import ExportError
from signal2image.errors import UserError

__all__ = ["ConfigError", "ExportError", "UserError"]


class ConfigError(UserError):
    """The YAML or a --set override does not fit the schema."""
