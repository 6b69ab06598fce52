"""The drift watch of `pipeline serve` on simulated streams: false alarms and detection delay.

1. A small model: `pipeline run` on a simulator job (5 classes x --recordings recordings of 0.5 s
   at 12.8 kHz, 1,024-sample windows, 32 px CWT, EfficientNet-Lite0 fine-tuned for --epochs
   epochs), whose export writes the ``features`` output and the drift reference; or --model PATH.
2. The real service on 127.0.0.1 (default flags: --drift-window 200, --drift-alpha 0.01), fed one
   window per request (float32 bytes) from recordings the simulator draws afresh (another seed):
   (a) like the training data (every condition drawn from the trained ranges): the share of
       windows of 200 requests (disjoint, after the first full window) in which any test alarmed;
       once without and once with the requests' rpm/load declared;
   (c) planned speed changes inside the trained range (all at 950, 1,200, 1,500, 1,800 or 2,000
       rpm +- 1 %), rpm and load declared (at 1,500 rpm also undeclared);
   (b) after a full window like (a), a changed stream: 10 dB more noise; speeds beyond the trained
       range (2,400-3,000 rpm, not declared); faults of a severity never trained (0.05-0.2);
       reported: requests of the changed stream until the alarm (checked every 10 requests).
   Between scenarios POST /v1/admin/reload restarts the watch with an empty window.
3. Predict latency with the watch on and off (two services, interleaved rounds of one client).

    python benchmarks/drift.py [--blocks 30] [--recordings 24] [--epochs 2] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import load_service  # noqa: E402

from pipeline.config import FAULT_CLASSES, SimulatorConfig  # noqa: E402
from pipeline.ingest.simulator import GearboxSimulator  # noqa: E402

FS, LENGTH = 12800, 1024
KEY = "drift-benchmark"
TRAINED = {"rpm": (900.0, 2100.0), "load": (0.2, 1.0), "snr_db": (0.0, 10.0), "severity": (0.3, 1.0)}


def train_model(folder: Path, recordings: int, epochs: int) -> Path:
    job = {
        "name": "drift-bench",
        "data": {
            "cache": False,
            "simulator": {"fs": FS, "duration_s": 0.5, "recordings_per_class": recordings},
            "window": {"length": LENGTH, "hop": LENGTH // 2},
        },
        "transform": {"kind": "cwt", "image_size": 32, "cwt": {"n_scales": 32, "f_min": 100, "f_max": 6000}},
        "train": {"epochs": epochs, "num_threads": 2, "strategies": [{"name": "finetune", "lr": 0.001}]},
        "tracking": {"experiment": "drift-bench", "registered_model": "drift-bench"},
        "export": {"dir": str(folder / "artifacts")},
    }
    config = folder / "job.yaml"
    config.write_text(yaml.safe_dump(job, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(config)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pipeline run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    models = sorted((folder / "artifacts").rglob("model.onnx"))
    lines = proc.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if "test acc" in line), None)
    accuracy = [lines[header], lines[header + 2]] if header is not None and header + 2 < len(lines) else []
    print(f"trained and exported in {time.perf_counter() - start:.0f} s: {models[-1]}")
    for line in accuracy[-2:]:
        print("  " + line.strip())
    return models[-1]


class Stream:
    """Windows of fresh simulator recordings (seeded), one per request, in random order, with
    the rpm and load of the recording each came from."""

    def __init__(self, seed: int, count: int, **ranges: tuple[float, float]) -> None:
        per_class = max(3, int(np.ceil(count / len(FAULT_CLASSES) / 5)))  # 0.5 s: 11 windows of 1,024
        cfg = SimulatorConfig(
            fs=FS, duration_s=0.5, recordings_per_class=per_class, seed=seed, **{**TRAINED, **ranges}
        )
        windows, conditions = [], []
        for rec in GearboxSimulator(cfg).recordings():
            starts = np.random.default_rng([seed, len(windows)]).choice(
                rec.n_samples - LENGTH, 5, replace=False
            )
            for s in starts:
                windows.append(rec.signal[0, s : s + LENGTH])
                conditions.append((rec.condition["rpm"], rec.condition["load"]))
        order = np.random.default_rng(seed).permutation(len(windows))[:count]
        self.windows = [windows[i] for i in order]
        self.conditions = [conditions[i] for i in order]


class Service(load_service.Service):
    """The shared benchmark service (benchmarks/load_service.py) with the reload key set, and the
    requests this benchmark sends."""

    def __init__(self, model: Path, *flags: str) -> None:
        super().__init__(model, *flags, env={"PIPELINE_API_KEY": KEY})

    def predict(self, window: np.ndarray, condition: tuple[float, float] | None = None) -> float:
        params = {"fs": FS}
        if condition is not None:
            params.update(rpm=condition[0], load=condition[1])
        start = time.perf_counter()
        response = self.session.post(
            self.url + "/v1/predict/signal",
            params=params,
            data=np.asarray(window, "<f4").tobytes(),
            headers={"content-type": "application/octet-stream"},
            timeout=60,
        )
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"predict failed: {response.status_code} {response.text[:300]}")
        return elapsed

    def send(self, stream: Stream, start: int, stop: int, declare: bool, clients: int = 4) -> None:
        with ThreadPoolExecutor(clients) as pool:
            list(
                pool.map(
                    lambda i: self.predict(stream.windows[i], stream.conditions[i] if declare else None),
                    range(start, stop),
                )
            )

    def drift(self, sent: int) -> dict:
        """The drift status once the watch has taken and judged every request sent so far."""
        deadline = time.time() + 60
        while time.time() < deadline:
            status = self.session.get(self.url + "/v1/drift", timeout=10).json()
            if status["observed"] >= sent and (
                status["observed"] < status["window_size"]
                or status["observed"] - status["tested_at"] < status["step"]
            ):
                return status
            time.sleep(0.02)
        raise SystemExit(f"the drift watch did not catch up: {status}")

    def reset(self) -> None:
        r = self.session.post(self.url + "/v1/admin/reload", headers={"x-api-key": KEY}, timeout=60)
        assert r.status_code == 200, r.text


def false_alarms(
    service: Service, stream: Stream, blocks: int, declare: bool, window: int
) -> tuple[int, int]:
    """(windows of `window` requests with an alarm, windows), after a first full window."""
    service.reset()
    service.send(stream, 0, window, declare)
    before = service.drift(window)["alarmed_evaluations"]
    alarmed = 0
    for b in range(blocks):
        lo = window * (b + 1)
        service.send(stream, lo, lo + window, declare)
        after = service.drift(lo + window)["alarmed_evaluations"]
        alarmed += after > before
        before = after
    return alarmed, blocks


def detection(
    service: Service, clean: Stream, changed: Stream, window: int, declare: bool, limit: int
) -> tuple[int | None, dict]:
    """Requests of the `changed` stream until the alarm (None: none within `limit`), and the status."""
    service.reset()
    service.send(clean, 0, window, declare)
    before = window
    status = service.drift(before)
    while status["alarm"]:  # a false alarm on the clean stream: more of it until it clears
        print(f"    (a false alarm before the change, p = {status['p_value']:.4f}: 50 more clean requests)")
        service.send(clean, before, before + 50, declare)
        before += 50
        status = service.drift(before)
    for sent in range(10, limit + 1, 10):
        service.send(changed, sent - 10, sent, declare, clients=2)
        status = service.drift(before + sent)
        if status["alarm"]:
            return sent, status
    return None, status


def latency(model: Path, rounds: int, requests_per_round: int, stream: Stream) -> dict[str, list[float]]:
    on, off = Service(model), Service(model, "--no-drift")
    times: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for service in (on, off):  # warm both, and fill the window of the watched one
            service.send(stream, 0, 250, False)
        for r in range(rounds):
            for name, service in (("on", on), ("off", off)) if r % 2 == 0 else (("off", off), ("on", on)):
                for i in range(requests_per_round):
                    k = (r * requests_per_round + i) % len(stream.windows)
                    times[name].append(service.predict(stream.windows[k]))
        status = on.drift(0)
        print(f"  watched service ran {status['evaluations']} drift tests during the rounds")
    finally:
        on.stop()
        off.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="an export with a drift reference")
    parser.add_argument("--recordings", type=int, default=24, help="training recordings per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=30, help="windows of 200 requests for the false alarms")
    parser.add_argument("--limit", type=int, default=400, help="most changed requests sent per scenario")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--latency-rounds", type=int, default=6)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_model(Path(tmp), args.recordings, args.epochs)
        w = args.window
        count = w * (args.blocks + 1)
        clean = Stream(1000, count)
        service = Service(model, "--drift-window", str(w), "--max-wait-ms", "2")
        try:
            status = service.session.get(service.url + "/v1/drift", timeout=10).json()
            if not status.get("available"):
                raise SystemExit(f"the model has no drift reference: {status}")
            print(f"reference: {status['reference_samples']} samples; window {w}, alpha {status['alpha']}")
            t0 = time.perf_counter()
            for declare in (False, True):
                alarmed, blocks = false_alarms(service, clean, args.blocks, declare, w)
                what = "rpm/load declared" if declare else "no condition declared"
                print(
                    f"(a) like the training data, {what}: alarms in {alarmed} of {blocks} windows of {w} "
                    f"requests ({100 * alarmed / blocks:.1f} %; goal <= 5 %) "
                    f"[{time.perf_counter() - t0:.0f} s]"
                )
            for speed in (950.0, 1200.0, 1500.0, 1800.0, 2000.0):
                planned = Stream(1001 + int(speed), w * 6, rpm=(0.99 * speed, 1.01 * speed))
                alarmed, blocks = false_alarms(service, planned, 5, True, w)
                print(
                    f"(c) planned speed change to {speed:.0f} rpm +- 1 %, declared: alarms in {alarmed} of "
                    f"{blocks} windows"
                )
                if speed == 1500.0:
                    alarmed, blocks = false_alarms(service, planned, 5, False, w)
                    print(f"    the same stream, rpm not declared: alarms in {alarmed} of {blocks} windows")
            scenarios = {
                "10 dB more noise (SNR -10..0 dB)": (Stream(1002, args.limit, snr_db=(-10.0, 0.0)), False),
                "speeds beyond the trained range (2400-3000 rpm), not declared": (
                    Stream(1003, args.limit, rpm=(2400.0, 3000.0)),
                    False,
                ),
                "speeds beyond the trained range, declared": (
                    Stream(1003, args.limit, rpm=(2400.0, 3000.0)),
                    True,
                ),
                "a fault severity never trained (0.05-0.2)": (
                    Stream(1004, args.limit, severity=(0.05, 0.2)),
                    False,
                ),
            }
            for name, (changed, declare) in scenarios.items():
                n, status = detection(service, clean, changed, w, declare, args.limit)
                bands = ", ".join(
                    f"{b['range'][0]:.0f}-{b['range'][1]:.0f} {b['unit']} {b['change_std']:+.2f}"
                    for b in status["bands"]
                )
                outside = status["conditions"]["outside_trained_range"]
                print(
                    f"(b) {name}: alarm after {n if n is not None else f'> {args.limit}'} requests "
                    f"(p = {status['p_value']:.4f}; bands moved most: {bands}"
                    + (f"; outside the trained range: {outside}" if outside else "")
                    + ")"
                )
        finally:
            service.stop()
        times = latency(model, args.latency_rounds, 100, clean)
        for name in ("off", "on"):
            t = sorted(times[name])
            print(
                f"latency, drift watch {name:3s}: p50 {1000 * statistics.median(t):.2f} ms, "
                f"p95 {1000 * t[int(0.95 * len(t))]:.2f} ms over {len(t)} requests"
            )
    print(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
