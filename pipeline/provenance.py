"""Provenance of a job's parent run: what ran (git commit, package versions), on what data, where."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

import torch

from pipeline.config import JobConfig
from pipeline.data import PreparedData


def config_hash(cfg: JobConfig) -> str:
    """Hash of the whole resolved config: `--resume` continues only a run of the very same config."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def run_tags(
    cfg: JobConfig, config_path: str | None, data: PreparedData, device: torch.device, data_hash: str
) -> dict[str, str]:
    """Parent-run tags: provenance (git commit, package versions), data hash and sizes, device."""
    tags = {
        "job": cfg.name,
        "config_file": str(config_path or "defaults"),
        "data_hash": data_hash,
        "device": device.type,
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    for package in ("torch", "torchvision", "mlflow", "onnx", "onnxruntime-gpu", "numpy", "PyWavelets"):
        try:
            tags[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for split, counts in data.report()["samples"].items():
        tags[f"size.{split}"] = str(sum(counts.values()))
        for label, n in counts.items():
            tags[f"size.{split}.{label}"] = str(n)
    return tags


def git_commit() -> str | None:
    """Commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
