"""Training-step speed on the CPU: the NCHW (contiguous) layout against channels_last.

EfficientNet-Lite0 (ImageNet weights, three input channels as in the ELPV job), AdamW, batch 32,
random inputs (speed does not depend on the data). Each round times one step in each layout back
to back; the result is the median over rounds of the per-round ratio, so the
shared machine's noise hits both layouts alike. `pipeline/train.py` trains in channels_last on
every device because of this measurement.

    python benchmarks/memory_format_speed.py [--rounds 5] [--sizes 96 160 224] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from models import build_model

BACKBONE = "efficientnet_lite0"


def step_seconds(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool
) -> float:
    """One forward, backward and optimiser step in the given layout, in seconds."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    xb = x.contiguous(memory_format=layout)
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(xb), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 160, 224])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(BACKBONE, num_classes=2, pretrained=True)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    print("| image px | NCHW s/step | channels_last s/step | NCHW / channels_last (median) |")
    print("|---|---|---|---|")
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        y = torch.randint(0, 2, (args.batch,))
        for layout in (False, True):  # warm-up: oneDNN picks its kernels on the first call
            step_seconds(model, opt, x, y, channels_last=layout)
        nchw, last, ratios = [], [], []
        for _ in range(args.rounds):
            a = step_seconds(model, opt, x, y, channels_last=False)
            b = step_seconds(model, opt, x, y, channels_last=True)
            nchw.append(a)
            last.append(b)
            ratios.append(a / b)
        print(
            f"| {size} | {statistics.median(nchw):.3f} | {statistics.median(last):.3f} "
            f"| {statistics.median(ratios):.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
