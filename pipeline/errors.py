"""Errors a user can fix. The CLI prints their message and exits with code 2, never a traceback."""


class UserError(Exception):
    """Bad configuration, arguments or input files: the message names the field, the value and the fix."""


class ConfigError(UserError):
    """The YAML or a --set override does not fit the schema."""


class ExportError(RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch model (not a user error)."""
