"""Errors of the export and serving side."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch model (not a user error)."""
