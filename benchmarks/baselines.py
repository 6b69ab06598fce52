"""The classical baselines of a job config on its own split, without the networks: what a linear
model on the log spectrum (spectrum_logreg), MiniRocket (minirocket, the peers extra) or pooled
pixels (pixels_logreg) reach, C chosen on validation, test only reported.

    python benchmarks/baselines.py configs/forda.yaml [--kinds spectrum_logreg minirocket]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.baselines import fit_baseline  # noqa: E402
from pipeline.config import BASELINE_KINDS, StrategyConfig, load_config  # noqa: E402
from pipeline.data import prepare_data  # noqa: E402
from pipeline.evaluate import score_test  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--kinds", nargs="+", choices=BASELINE_KINDS, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    cfg = load_config(args.config)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    start = time.perf_counter()
    data = prepare_data(cfg, echo=print)
    print(f"data ready in {time.perf_counter() - start:.0f} s")
    listed = [s for s in cfg.train.strategies if s.is_baseline]
    strategies = [s for s in listed if args.kinds is None or s.kind in args.kinds]
    strategies += [StrategyConfig(name=k) for k in args.kinds or () if k not in {s.kind for s in strategies}]
    window_norm = getattr(data.transform, "signal_norm", "none") == "window"
    for strategy in strategies:
        for seed in args.seeds:
            pixels = strategy.kind == "pixels_logreg"
            split = {
                n: (data.images[n] if pixels else data.windows[n].x, data.windows[n].y) for n in data.windows
            }
            fitted = fit_baseline(
                strategy,
                split["train"],
                split["val"],
                n_classes=len(data.classes),
                seed=seed,
                select_metric=cfg.train.select_metric,
                balanced=cfg.train.class_weighting != "none",
                window_norm=window_norm,
            )
            test = score_test(fitted.predict_proba(split["test"][0]), data)
            recall = {k: round(v, 3) for k, v in test.metrics.items() if k.startswith("test_recall")}
            print(
                f"{strategy.name} seed {seed}: C {fitted.c:g}, val acc {fitted.val_accuracy:.4f}, "
                f"test acc {test.metrics['test_accuracy']:.4f}, "
                f"macro-F1 {test.metrics['test_macro_f1']:.4f}, "
                f"{recall}, fit {fitted.seconds:.1f} s"
            )


if __name__ == "__main__":
    main()
