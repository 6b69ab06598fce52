"""The raw-signal ONNX model against today's path (Python transform + image model), interleaved.

The network is the default job's (EfficientNet-Lite0, 5 classes, random weights: speed does not
depend on them) on the default job's transform (CWT cmor1.5-1.0, 64 scales 200-6000 Hz, 12.8 kHz,
2,048-sample windows, 64 px, floor -40 dB). Two comparisons, each round timing every method once
in turn; the report is the median of the per-round ratios:

1. windows -> logits on ONNX Runtime's CPU provider: the raw-signal model (`deploy.signal_model`)
   vs the Python transform (torch) followed by the image model, at batch 1 and 32, on 1 and 2
   threads (torch and ONNX Runtime alike);
2. the CWT image alone: the transform's ONNX graph (`signal2image.onnx_graph`, 3 x 64 x 64 network
   input) vs `pywt.cwt(method='fft')` (16 windows per call, axis=-1) + |.| + the same antialiased
   resize to 64 x 64 + dB + floor, on 2 threads, 256 windows per round.

    python benchmarks/signal_model_speed.py [--rounds 7] [--threads 1,2] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pywt
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import signal2image  # noqa: E402
from deploy.inferencer import create_session  # noqa: E402
from deploy.metadata import ModelMetadata  # noqa: E402
from deploy.onnx_export import export_onnx  # noqa: E402
from deploy.signal_model import build_signal_model  # noqa: E402
from models import build_model  # noqa: E402
from signal2image import CwtTransform  # noqa: E402
from signal2image.onnx_graph import transform_model  # noqa: E402

FS, LENGTH = 12800.0, 2048
CLASSES = ["healthy", "tooth_crack", "wear", "outer_race", "inner_race"]


def default_transform() -> CwtTransform:
    return CwtTransform(fs=FS, image_size=64, floor_db=-40, f_min=200, f_max=6000, n_scales=64)


def export_models(folder: Path, windows: np.ndarray) -> tuple[Path, Path, CwtTransform]:
    """The default network as image model and raw-signal model."""
    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", num_classes=len(CLASSES), pretrained=False).eval()
    cwt = default_transform()
    image = folder / "model.onnx"
    export_onnx(
        net,
        cwt(windows[:4]),
        image,
        metadata=ModelMetadata.for_transform(CLASSES, cwt, window=(LENGTH, 1024)),
    )
    raw = folder / "model.signal.onnx"
    onnx.save(build_signal_model(onnx.load(str(image)), cwt), str(raw))
    return image, raw, cwt


def timed(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def pywt_image(x: np.ndarray, cwt: CwtTransform, chunk: int = 16) -> np.ndarray:
    """`pywt.cwt(method='fft')` + |.| + the antialiased resize + dB relative to the peak, floored, `chunk`
    windows per call (a whole batch of 256 at once allocates 0.5 GB of complex128 and runs slower)."""
    if len(x) > chunk:
        return np.concatenate([pywt_image(x[i : i + chunk], cwt, chunk) for i in range(0, len(x), chunk)])
    coef = pywt.cwt(x, cwt.scales_, cwt.wavelet, sampling_period=1 / FS, method="fft", axis=-1)[0]
    mag = torch.from_numpy(np.abs(coef).astype(np.float32)).transpose(0, 1)  # (N, scales, L)
    small = F.interpolate(mag[:, None], size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    db = 20 * torch.log10(small[:, 0].clamp_min(1e-12))
    db = db - db.amax(dim=(1, 2), keepdim=True)
    return ((db.clamp(cwt.floor_db, 0) - cwt.floor_db) / -cwt.floor_db).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--image-windows", type=int, default=256, help="windows per call in comparison 2")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a trained image model (model.onnx of the default job) with model.signal.onnx beside it",
    )
    parser.add_argument("--windows", type=Path, default=None, help="real windows (N, 1, 2048) as .npy")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((max(256, args.image_windows), 1, LENGTH)).astype(np.float32)
    if args.windows is not None:
        windows = np.load(args.windows).astype(np.float32)
    folder = Path(tempfile.mkdtemp())
    if args.model is None:
        image_path, raw_path, cwt = export_models(folder, windows[:, 0])
    else:
        image_path, raw_path = args.model, args.model.with_name(args.model.stem + ".signal.onnx")
        cwt = signal2image.from_dict(dict(ModelMetadata.from_onnx(image_path).transform))
    machine = platform.processor() or platform.machine()
    print(
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine}, {os.cpu_count()} cores (shared); "
        f"rounds {args.rounds}; onnxruntime CPU provider; model {image_path}"
    )
    cpu = ["CPUExecutionProvider"]

    # 1. windows -> logits
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        image = create_session(image_path, providers=cpu, threads=threads)
        raw = create_session(raw_path, providers=cpu, threads=threads)
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.ascontiguousarray(windows[:batch])
            calls = max(2, 64 // batch)

            def python_path(image=image, x=x) -> np.ndarray:  # noqa: ANN001
                return image.run(["logits"], {"input": cwt(x).numpy()})[0]

            def raw_path_run(raw=raw, x=x) -> np.ndarray:  # noqa: ANN001
                return raw.run(["logits"], {"signal": x})[0]

            inputs = cwt(x).numpy()

            def network_only(image=image, inputs=inputs) -> np.ndarray:  # noqa: ANN001
                return image.run(["logits"], {"input": inputs})[0]

            diff = float(np.abs(python_path() - raw_path_run()).max())
            ratios, t_py, t_raw, t_net = [], [], [], []
            for _ in range(args.rounds):
                a = timed(python_path, calls)
                b = timed(raw_path_run, calls)
                t_net.append(timed(network_only, calls))
                t_py.append(a)
                t_raw.append(b)
                ratios.append(a / b)
            print(
                f"windows->logits threads {threads} batch {batch:3d}: Python transform + image model "
                f"{batch / statistics.median(t_py):7.1f} windows/s, raw-signal model "
                f"{batch / statistics.median(t_raw):7.1f} windows/s, "
                f"ratio median {statistics.median(ratios):.2f}x "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f}); the network alone "
                f"{batch / statistics.median(t_net):7.1f} windows/s; max |logit diff| {diff:.1e}"
            )

    # 2. the CWT image alone, 2 threads
    torch.set_num_threads(2)
    onnx.save(transform_model(cwt, length=LENGTH), str(folder / "cwt.onnx"))
    graph = create_session(folder / "cwt.onnx", providers=cpu, threads=2)
    x = np.ascontiguousarray(windows[: args.image_windows])
    ours = graph.run(None, {"signal": x})[0]
    theirs = pywt_image(x[:, 0], cwt)
    unit = ours[:, 0] * cwt.std[0] + cwt.mean[0]  # back to [0, 1] for the comparison
    ratios, t_ours, t_pywt = [], [], []
    for _ in range(args.rounds):
        a = timed(lambda: graph.run(None, {"signal": x}), 1)
        b = timed(lambda: pywt_image(x[:, 0], cwt), 1)
        t_ours.append(a)
        t_pywt.append(b)
        ratios.append(b / a)
    n = len(x)
    print(
        f"CWT image alone, 2 threads, {n} windows per call: ONNX graph {n / statistics.median(t_ours):7.0f} "
        f"windows/s, pywt.cwt(fft) + resize {n / statistics.median(t_pywt):7.0f} windows/s, ratio median "
        f"{statistics.median(ratios):.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f}); images differ by "
        f"max {np.abs(unit - theirs).max():.3f}, mean {np.abs(unit - theirs).mean():.4f} (pywt's rounded "
        "filters vs the band-limited ones, see docs/deploy.md)"
    )


if __name__ == "__main__":
    main()
