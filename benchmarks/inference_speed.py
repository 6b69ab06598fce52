"""ONNX Runtime vs PyTorch eager, and INT8 vs FP32, for the exported network, interleaved.

The network is the default job's: EfficientNet-Lite0 on 3 x 64 x 64 CWT images, 5 classes (weights
do not change the speed; `--model` takes a trained export instead of a fresh random one). For each
thread count and batch size every round times PyTorch eager, ONNX Runtime FP32 and ONNX Runtime
INT8 (static QDQ, calibrated on 64 inputs) in turn; the report is the median of per-round ratios.

With `--model PATH.onnx` (an FP32 file written by `pipeline run` or `pipeline export`) ONNX Runtime
runs that file and its INT8 quantisation (calibrated on 64 random inputs: the speed does not depend
on the calibration), at the input shape it declares; PyTorch eager runs the same architecture
(backbone, classes and channels from the file's metadata) with random weights, and is left out
when the metadata does not name a known backbone.

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
from deploy.metadata import ModelMetadata
from deploy.onnx_export import INPUT_NAME, export_onnx
from deploy.variants import make_int8
from models import build_model
from models.registry import list_backbones
from signal2image import ImageTransform
from signal2image.errors import UserError


def per_call(fn, calls: int) -> float:
    fn()  # warm
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def exported_network(path: Path, size: int) -> tuple[torch.nn.Module | None, str, tuple[int, int, int]]:
    """A random-weights PyTorch twin of the export at `path` (None when its backbone is unknown), a
    description, and its input shape (channels, height, width; `size` where the file leaves it open).

    Raises:
        SystemExit: the file is not an FP32 ONNX model.
    """
    import onnx

    if not path.is_file():
        raise SystemExit(f"--model {path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a corrupt or non-ONNX file
        raise SystemExit(f"--model {path}: not an ONNX model ({exc})") from None
    try:
        meta = ModelMetadata.from_onnx(proto)
    except UserError as exc:
        raise SystemExit(f"--model {path}: {exc}") from None
    if meta.variant is not None:
        raise SystemExit(f"--model {path} is a variant ({meta.variant.kind}); pass the FP32 export")
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME] or list(proto.graph.input)
    if not inputs:
        raise SystemExit(f"--model {path}: the graph has no input")
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise SystemExit(f"--model {path}: expected an (N, C, H, W) input, got {len(dims)} dimensions")
    shape = (dims[1] or 3, dims[2] or size, dims[3] or size)
    backbone = meta.model.backbone or None
    twin = None
    if backbone in list_backbones() and shape[0] in (1, 3):
        torch.manual_seed(0)
        twin = build_model(
            backbone, num_classes=len(meta.classes), pretrained=False, in_channels=shape[0]
        ).eval()
    name = f"{path.name} ({backbone or 'unknown backbone'})"
    return twin, name, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="an exported FP32 .onnx file to benchmark instead of a fresh random EfficientNet-Lite0",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp())
    model: torch.nn.Module | None
    if args.model is None:
        model = build_model("efficientnet_lite0", num_classes=args.classes, pretrained=True).eval()
        x = torch.randn(64, 3, args.size, args.size)
        fp32 = folder / "model.onnx"
        classes = [str(i) for i in range(args.classes)]
        export_onnx(
            model,
            x[:8],
            fp32,
            metadata=ModelMetadata.for_transform(classes, ImageTransform(image_size=args.size)),
        )
        network = f"EfficientNet-Lite0 at {args.size} px"
    else:
        model, name, shape = exported_network(args.model, args.size)
        x = torch.randn(64, *shape)
        fp32 = args.model
        network = f"{name} at {shape[0]} x {shape[1]} x {shape[2]}" + (
            "" if model is not None else "; no PyTorch twin (backbone not in the metadata)"
        )
    int8 = make_int8(fp32, folder / "model.int8.onnx", x.numpy())
    if model is not None:
        model = model.to(memory_format=torch.channels_last)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {network}; "
        f"rounds {args.rounds}"
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
            if model is None:
                del times["torch eager"]
            for _ in range(args.rounds):
                if model is not None:
                    with torch.inference_mode():
                        times["torch eager"].append(per_call(lambda m=model, b=xb: m(b), calls))
                times["ort fp32"].append(
                    per_call(lambda s=sessions["fp32"], b=xn: s.run(None, {INPUT_NAME: b}), calls)
                )
                times["ort int8"].append(
                    per_call(lambda s=sessions["int8"], b=xn: s.run(None, {INPUT_NAME: b}), calls)
                )
            med = {k: statistics.median(v) for k, v in times.items()}
            int8_vs_fp32 = statistics.median(f / i for f, i in zip(times["ort fp32"], times["ort int8"]))
            ratios = f"INT8/FP32 {int8_vs_fp32:.2f}x"
            if "torch eager" in times:
                ort_vs_torch = statistics.median(
                    t / o for t, o in zip(times["torch eager"], times["ort fp32"])
                )
                ratios = f"ORT/torch {ort_vs_torch:.2f}x, {ratios}"
            rate = " ".join(f"{k} {batch / v:7.0f} img/s ({v * 1e3:6.2f} ms)" for k, v in med.items())
            print(f"  threads {threads} batch {batch:2d}: {rate} | {ratios}")


if __name__ == "__main__":
    main()
