"""Serving: model metadata, ONNX export with parity checks, INT8/FP16 variants, the inferencer, the
HTTP service, the Triton writer and the MLflow store resolution serving needs.

Dependency rule: deploy imports signal2image but nothing from pipeline (training), so the line's
service installs and loads no training code.
"""
