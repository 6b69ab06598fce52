"""Deployment: ONNX export with parity checks, and the inferencer."""
