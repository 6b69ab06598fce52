"""ONNX Runtime vs PyTorch eager, and INT8 vs FP32, for the exported network, interleaved.

The network is the default job's: EfficientNet-Lite0 on 3 x 64 x 64 CWT images, 5 classes (weights
do not change the speed; `--model` takes a trained export instead of a fresh random one). For each
thread count and batch size every round times PyTorch eager, ONNX Runtime FP32 and ONNX Runtime
INT8 (static QDQ, calibrated on 64 inputs) in turn; the report is the median of per-round ratios.

    python benchmarks/inference_speed.py [--rounds 7] [--size 64] [--model artifacts/.../model.onnx]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deploy.inferencer import create_session
from deploy.onnx_export import INPUT_NAME, export_onnx
from deploy.variants import make_int8
from models import build_model


def per_call(fn, calls: int) -> float:
    fn()  # warm
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=args.classes, pretrained=True).eval()
    x = torch.randn(64, 3, args.size, args.size)
    folder = Path(tempfile.mkdtemp())
    fp32 = folder / "model.onnx"
    export_onnx(model, x[:8], fp32, metadata={"classes": [str(i) for i in range(args.classes)]})
    int8 = make_int8(fp32, folder / "model.int8.onnx", x.numpy())
    model = model.to(memory_format=torch.channels_last)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"EfficientNet-Lite0 at {args.size} px; rounds {args.rounds}"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = {
            name: create_session(path, providers=["CPUExecutionProvider"], threads=threads)
            for name, path in (("fp32", fp32), ("int8", int8))
        }
        for batch in (1, 32):
            xb = x[:batch].contiguous(memory_format=torch.channels_last)
            xn = np.ascontiguousarray(x[:batch].numpy())
            calls = 20 if batch == 1 else 3
            times: dict[str, list[float]] = {"torch eager": [], "ort fp32": [], "ort int8": []}
            for _ in range(args.rounds):
                with torch.inference_mode():
                    times["torch eager"].append(per_call(lambda xb=xb: model(xb), calls))
                times["ort fp32"].append(
                    per_call(lambda xn=xn, s=sessions["fp32"]: s.run(None, {INPUT_NAME: xn}), calls)
                )
                times["ort int8"].append(
                    per_call(lambda xn=xn, s=sessions["int8"]: s.run(None, {INPUT_NAME: xn}), calls)
                )
            med = {k: statistics.median(v) for k, v in times.items()}
            ort_vs_torch = statistics.median(t / o for t, o in zip(times["torch eager"], times["ort fp32"]))
            int8_vs_fp32 = statistics.median(f / i for f, i in zip(times["ort fp32"], times["ort int8"]))
            rate = " ".join(f"{k} {batch / v:7.0f} img/s ({v * 1e3:6.2f} ms)" for k, v in med.items())
            print(
                f"  threads {threads} batch {batch:2d}: {rate} | "
                f"ORT/torch {ort_vs_torch:.2f}x, INT8/FP32 {int8_vs_fp32:.2f}x"
            )


if __name__ == "__main__":
    main()
