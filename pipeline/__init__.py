"""Industrial fault and defect diagnosis: signals or images in, a compared, registered ONNX model out."""

__version__ = "0.1.0"
