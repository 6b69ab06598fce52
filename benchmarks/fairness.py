"""Fairness of `pipeline serve` on loopback: a 1-window request's latency while another client keeps
sending maximal requests.

One service (the default job's signal network, random weights: EfficientNet-Lite0 at 64 px, CWT
with 64 scales, 12.8 kHz, 2,048-sample windows with a hop of 1,024; --max-batch 32
--max-wait-ms 5). First the small client alone (--requests / 2 requests: the reference), then
the same client while one "large" client sends, back to back, requests of --windows windows
(1,024, the default --max-windows: 1,049,600 samples, 4.2 MB of float32). Reported: p50/p95/p99
of the small requests' latency, and the windows per second the large client got.

Bounded: --requests small requests, at most --max-seconds per phase, each request with a 120 s
timeout; 127.0.0.1 only. It runs whatever code PYTHONPATH/--root points at, so the same script
measures an older checkout (whose service knows neither the split nor --max-windows):

    python benchmarks/fairness.py [--requests 100] [--windows 1024] [--max-seconds 90]
    cd /old/checkout && PYTHONPATH=$PWD python /path/to/fairness.py --root $PWD
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch

FS, LENGTH, HOP = 12800, 2048, 1024


def default_model(folder: Path) -> Path:
    """The default job's signal network (random weights), exported with the metadata format of the
    code on the path (ModelMetadata, or the older plain dict)."""
    from deploy.onnx_export import export_onnx
    from models import build_model
    from signal2image import CwtTransform

    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", num_classes=5, pretrained=False).eval()
    classes = ["healthy", "tooth_crack", "wear", "outer_race", "inner_race"]
    cwt = CwtTransform(fs=FS, image_size=64, floor_db=-40, f_min=200, f_max=6000, n_scales=64)
    windows = np.random.default_rng(0).standard_normal((4, LENGTH)).astype(np.float32)
    import deploy

    if (Path(deploy.__file__).parent / "metadata.py").exists():
        from deploy.metadata import ModelMetadata

        metadata: object = ModelMetadata.for_transform(classes, cwt, window=(LENGTH, HOP))
    else:  # an older checkout: export_onnx takes a plain dict
        metadata = {
            "classes": classes,
            "transform": cwt.to_dict(),
            "window": {"length": LENGTH, "hop": HOP},
            "channels": [0],
        }
    path = folder / "signal.onnx"
    export_onnx(net, cwt(windows), path, metadata=metadata)
    return path


def make_service(root: Path, model: Path, *flags: str) -> Any:
    """The service of checkout `root`, without an API key (predict open on loopback)."""
    from load_service import Service  # after default_model: it imports this tree's packages

    return Service(model, *flags, root=root, env={"PIPELINE_API_KEY": None})


def post(session: requests.Session, url: str, signal: np.ndarray) -> tuple[bool, float]:
    start = time.perf_counter()
    try:
        response = session.post(
            f"{url}/v1/predict/signal?fs={FS}",
            data=signal.astype("<f4").tobytes(),
            headers={"content-type": "application/octet-stream"},
            timeout=120,
        )
        ok = response.status_code == 200
    except requests.RequestException:
        ok = False
    return ok, time.perf_counter() - start


def small_client(url: str, count: int, max_seconds: float) -> tuple[list[float], int]:
    session = requests.Session()
    signal = np.random.default_rng(1).standard_normal(LENGTH).astype(np.float32)
    latencies, errors = [], 0
    stop = time.perf_counter() + max_seconds
    while len(latencies) < count and time.perf_counter() < stop:
        ok, seconds = post(session, url, signal)
        latencies.append(seconds)
        errors += not ok
        time.sleep(0.01)
    return latencies, errors


def summary(name: str, latencies: list[float], errors: int) -> str:
    p50, p95, p99 = (np.percentile(latencies, q) * 1e3 for q in (50, 95, 99))
    return (
        f"  {name:28s} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  p99 {p99:8.1f} ms  "
        f"max {max(latencies) * 1e3:8.1f} ms  errors {errors}/{len(latencies)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="small requests under load (half alone)")
    parser.add_argument("--windows", type=int, default=1024, help="windows per large request")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="longest a phase runs")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--model", type=Path, default=None, help="a signal .onnx (default: built)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))

    model = args.model or default_model(Path(tempfile.mkdtemp()))
    samples = (args.windows - 1) * HOP + LENGTH
    large = np.random.default_rng(2).standard_normal(samples).astype(np.float32)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; code: {args.root}; "
        f"large requests of {args.windows} windows ({samples} samples, {samples * 4 / 1e6:.1f} MB)"
    )
    service = make_service(args.root, model, "--max-batch", "32", "--max-wait-ms", "5")
    try:
        small_client(service.url, 5, 30)  # warm
        alone, alone_errors = small_client(service.url, max(args.requests // 2, 1), args.max_seconds)
        print(summary("1-window, alone", alone, alone_errors))

        stop = threading.Event()
        big: dict[str, float] = {"ok": 0, "failed": 0}

        def large_client() -> None:
            session = requests.Session()
            while not stop.is_set():
                ok, _ = post(session, service.url, large)
                big["ok" if ok else "failed"] += 1

        thread = threading.Thread(target=large_client)
        start = time.perf_counter()
        thread.start()
        time.sleep(0.5)  # the first large request is in
        loaded, loaded_errors = small_client(service.url, args.requests, args.max_seconds)
        stop.set()
        thread.join(timeout=180)
        wall = time.perf_counter() - start
        print(summary("1-window, with a large client", loaded, loaded_errors))
        print(
            f"  large client: {big['ok']:.0f} requests answered ({big['failed']:.0f} failed), "
            f"{big['ok'] * args.windows / wall:.0f} windows/s over {wall:.1f} s"
        )
    finally:
        service.stop()


if __name__ == "__main__":
    main()
