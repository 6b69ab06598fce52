"""Industrial fault and defect diagnosis: signals or images in, a compared, registered ONNX model out.

The training side: config, CLI, ingest, the job and its stages, MLflow runs and registry. It may
import signal2image, models and deploy; none of them imports it.
"""

__version__ = "0.1.0"
