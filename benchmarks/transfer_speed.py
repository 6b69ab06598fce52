"""Training speed of the strategies: the cached-feature linear probe against running the frozen
backbone every epoch, and training throughput (images/s) of scratch and fine-tune at 64 and 224 px.

EfficientNet-Lite0 (ImageNet weights), batch 32, random inputs of 5 classes (speed does not depend
on the data). The linear-probe comparison interleaves the two paths per round and reports the
median per-round ratio of the time per epoch; the cached path's one-off feature pass is reported
separately.

    python benchmarks/transfer_speed.py [--rounds 3] [--images 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models import build_model, head_path
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.train import features_of, fit

BACKBONE = "efficientnet_lite0"


def epoch_time(
    strategy: StrategyConfig, x: torch.Tensor, y: torch.Tensor, *, cached: bool, epochs: int, folder: Path
) -> tuple[float, float]:
    """(seconds per epoch after the first, seconds of the first epoch)."""
    torch.manual_seed(0)
    model = build_model(BACKBONE, num_classes=5, pretrained=True)
    cfg = TrainConfig(epochs=epochs, batch_size=32)
    out = fit(
        model,
        (x, y),
        (x[:64], y[:64]),
        n_classes=5,
        strategy=strategy,
        cfg=cfg,
        seed=0,
        device=torch.device("cpu"),
        checkpoint=folder / "c.pt",
        backbone=BACKBONE,
        cache_features=cached,
    )
    times = [r["epoch_seconds"] for r in out.history]
    return statistics.median(times[1:]) if len(times) > 1 else times[0], times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch threads {args.threads}; {BACKBONE}, batch 32"
    )

    x = torch.randn(args.images, 3, 64, 64)
    y = torch.arange(args.images) % 5
    probe = StrategyConfig(name="probe", kind="linear_probe", lr=1e-2)
    ratios, cached_epochs, frozen_epochs = [], [], []
    for _ in range(args.rounds):
        cached, _ = epoch_time(probe, x, y, cached=True, epochs=4, folder=folder)
        frozen, _ = epoch_time(probe, x, y, cached=False, epochs=2, folder=folder)
        cached_epochs.append(cached)
        frozen_epochs.append(frozen)
        ratios.append(frozen / cached)
    model = build_model(BACKBONE, num_classes=5, pretrained=True)
    start = time.perf_counter()
    features_of(model, head_path(BACKBONE), x, device=torch.device("cpu"))
    once = time.perf_counter() - start
    print(
        f"  linear probe, {args.images} images at 64 px: "
        f"frozen backbone every epoch {statistics.median(frozen_epochs):.2f} s/epoch, "
        f"cached features {statistics.median(cached_epochs) * 1e3:.1f} ms/epoch "
        f"(+ {once:.2f} s once for the features): "
        f"median ratio {statistics.median(ratios):.0f}x"
    )

    for size in (64, 224):
        n = 256 if size == 64 else 64
        xs = torch.randn(n, 3, size, size)
        ys = torch.arange(n) % 5
        for name, kind, lr in (("scratch", "scratch", 3e-3), ("finetune", "finetune", 1e-3)):
            per_epoch, _ = epoch_time(
                StrategyConfig(name=name, kind=kind, lr=lr), xs, ys, cached=False, epochs=2, folder=folder
            )
            print(f"  {name:8s} at {size:3d} px: {n / per_epoch:6.1f} images/s ({n} images per epoch)")


if __name__ == "__main__":
    main()
