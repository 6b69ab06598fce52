"""Load test of `pipeline serve` on loopback: N concurrent clients, micro-batching on vs off.

For each request kind (signal: one 2,048-sample window as float32 bytes; image: a 128 x 128 PNG)
two services run the same model, one with micro-batching (--max-batch 32 --max-wait-ms 5) and one
without (--no-batching). Rounds alternate between them; in a round every client sends its
requests one after another. Reported: throughput (median over rounds), p50/p95/p99 latency over
all rounds, errors, and the median of the per-round throughput ratios. Bounded: --rounds x
--clients x --requests requests per service, each with a 60 s timeout.

The models are the default job's network (EfficientNet-Lite0, 64 px; CWT cmor1.5-1.0, 200-6000 Hz,
64 scales, 12.8 kHz, 2,048-sample windows) with random weights unless --signal-model/--image-model
give trained exports: speed does not depend on the weights.

    python benchmarks/load_service.py [--clients 32] [--requests 8] [--rounds 5] [--kinds image]
    python benchmarks/load_service.py --compare-root ../before   # this tree against another checkout
    python benchmarks/load_service.py --kinds signal --raw-vs-python
        # the raw-signal model (transform in the graph) against the same network behind the Python
        # transform (the service before it), both batching on
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import signal2image  # noqa: E402
from deploy.metadata import ModelMetadata  # noqa: E402
from deploy.onnx_export import export_onnx  # noqa: E402
from deploy.signal_model import build_signal_model, signal_model_path  # noqa: E402
from models import build_model  # noqa: E402
from signal2image import CwtTransform, ImageTransform  # noqa: E402

FS, LENGTH = 12800, 2048


def default_models(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", num_classes=5, pretrained=False).eval()
    classes = ["healthy", "tooth_crack", "wear", "outer_race", "inner_race"]
    cwt = CwtTransform(fs=FS, image_size=64, floor_db=-40, f_min=200, f_max=6000, n_scales=64)
    windows = np.random.default_rng(0).standard_normal((4, LENGTH)).astype(np.float32)
    signal = folder / "signal.onnx"
    export_onnx(
        net,
        cwt(windows),
        signal,
        metadata=ModelMetadata.for_transform(classes, cwt, window=(LENGTH, 1024)),
    )
    img = ImageTransform(image_size=64)
    image = folder / "image.onnx"
    export_onnx(
        net,
        img([np.random.default_rng(1).random((128, 128)).astype(np.float32)] * 2),
        image,
        metadata=ModelMetadata.for_transform(classes, img),
    )
    return signal, image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`pipeline serve` of the checkout `root` on a free loopback port, ready when constructed.

    `env` adds (or, with None, removes) environment variables; `session` keeps a connection.
    The benchmarks (load_service, fairness, drift) share it.
    """

    def __init__(
        self, model: Path, *flags: str, root: Path = ROOT, env: dict[str, str | None] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.session = requests.Session()
        environ = {**os.environ, "PYTHONPATH": str(root)}
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "serve",
                "--model",
                str(model),
                "--port",
                str(self.port),
                *flags,
            ],
            cwd=root,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.session.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"service for {model} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def round_of(
    url: str, path: str, body: bytes, headers: dict[str, str], clients: int, per_client: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        session = requests.Session()
        mine, bad = [], 0
        barrier.wait()
        for _ in range(per_client):
            start = time.perf_counter()
            try:
                ok = session.post(url + path, data=body, headers=headers, timeout=60).status_code == 200
            except requests.RequestException:
                ok = False
            mine.append(time.perf_counter() - start)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return clients * per_client / wall, latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--signal-model", type=Path, default=None)
    parser.add_argument("--image-model", type=Path, default=None)
    parser.add_argument("--threads", default=None, help="--threads passed to both services")
    parser.add_argument(
        "--compare-root",
        type=Path,
        default=None,
        help="another checkout (e.g. the code before a change): its service, batching on, against this "
        "tree's, rounds alternating; reports this / other per round instead of batching on / off",
    )
    parser.add_argument("--kinds", default="signal,image", help="request kinds to run (signal, image)")
    parser.add_argument(
        "--raw-vs-python",
        action="store_true",
        help="signal requests: the package with its raw-signal model against the image model alone "
        "(Python transform in the service), both batching on",
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    signal_model, image_model = default_models(folder)
    signal_model = args.signal_model or signal_model
    image_model = args.image_model or image_model
    png = io.BytesIO()
    Image.fromarray((np.random.default_rng(2).random((128, 128)) * 255).astype(np.uint8)).save(
        png, format="PNG"
    )
    kinds = {
        "signal": (
            signal_model,
            f"/v1/predict/signal?fs={FS}",
            np.random.default_rng(3).standard_normal(LENGTH).astype("<f4").tobytes(),
            {"content-type": "application/octet-stream"},
        ),
        "image": (image_model, "/v1/predict/image", png.getvalue(), {"content-type": "image/png"}),
    }
    extra = ["--threads", args.threads] if args.threads else []
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.clients} clients x {args.requests} requests x {args.rounds} rounds per mode"
    )
    batching = ["--max-batch", "32", "--max-wait-ms", "5", *extra]
    for kind, (model, path, body, headers) in kinds.items():
        if kind not in args.kinds.split(","):
            continue
        if args.raw_vs_python and kind == "signal":
            import shutil

            import onnx

            raw = signal_model_path(model)
            if not raw.is_file():
                transform = signal2image.from_dict(dict(ModelMetadata.from_onnx(model).transform))
                onnx.save(build_signal_model(onnx.load(str(model)), transform), str(raw))
            alone = folder / "python-transform" / model.name  # no raw-signal model beside it
            alone.parent.mkdir(exist_ok=True)
            shutil.copyfile(model, alone)
            services = {
                "raw-signal model": Service(model, *batching),
                "Python transform": Service(alone, *batching),
            }
        elif args.compare_root is None:
            services = {
                "batching on": Service(model, *batching),
                "batching off": Service(model, "--no-batching", *extra),
            }
        else:
            services = {
                "this tree": Service(model, *batching),
                "other": Service(model, *batching, root=args.compare_root.resolve()),
            }
        try:
            for service in services.values():  # warm both
                round_of(service.url, path, body, headers, 4, 2)
            results: dict[str, dict[str, list]] = {m: {"rps": [], "lat": [], "err": []} for m in services}
            for _ in range(args.rounds):
                for mode, service in services.items():
                    rps, lat, err = round_of(service.url, path, body, headers, args.clients, args.requests)
                    results[mode]["rps"].append(rps)
                    results[mode]["lat"] += lat
                    results[mode]["err"].append(err)
            for mode, r in results.items():
                p50, p95, p99 = (np.percentile(r["lat"], q) * 1e3 for q in (50, 95, 99))
                print(
                    f"  {kind:6s} {mode:12s}: {statistics.median(r['rps']):7.1f} req/s  "
                    f"p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms  "
                    f"errors {sum(r['err'])}/{len(r['lat'])}"
                )
            first, second = list(results)
            ratio = statistics.median(a / b for a, b in zip(results[first]["rps"], results[second]["rps"]))
            print(f"  {kind:6s} throughput {first} / {second}: median {ratio:.2f}x over {args.rounds} rounds")
        finally:
            for service in services.values():
                service.stop()


if __name__ == "__main__":
    main()
