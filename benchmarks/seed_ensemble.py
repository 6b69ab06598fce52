"""What an ensemble of a finished job's seeds would buy: each seed's best checkpoint, and the mean of
their logits, scored on validation and test at argmax and at `train.operating_point` (the offset
chosen on validation, as the job does). A read of saved weights after the job, not a job option:
the job exports one seed's network.

    python benchmarks/seed_ensemble.py configs/elpv.yaml --checkpoints artifacts/elpv/<run>/checkpoints \
        --strategy discriminative [--set KEY=VALUE ...]

Run it with the job's config and overrides (the same split and inputs). It needs no MLflow store:
the checkpoints are ``<trial>.best.pt`` next to the trials' resume checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.data import prepare_data  # noqa: E402
from pipeline.operating_point import choose_offset, predict_with_offset  # noqa: E402
from pipeline.train import best_checkpoint_path, predict_logits  # noqa: E402
from pipeline.trials import load_best, trial_name  # noqa: E402


def scores(logits: np.ndarray, y: np.ndarray, index: int, offset: float) -> tuple[float, float]:
    """Accuracy and recall of class `index` with `offset` added to its logit."""
    pred = predict_with_offset(logits, index, offset)
    return float(np.mean(pred == y)), float(np.mean(pred[y == index] == index))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--checkpoints", type=Path, required=True, help="the job's checkpoints folder")
    parser.add_argument("--strategy", action="append", required=True, help="repeat for several")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    point = cfg.train.operating_point
    if point is None:
        parser.error("the config has no train.operating_point; set one with --set")
    known = [s.name for s in cfg.train.strategies]
    unknown = sorted(set(args.strategy) - set(known))
    if unknown:
        parser.error(f"--strategy {', '.join(unknown)}: not in train.strategies ({', '.join(known)})")
    fraction = cfg.train.train_fraction[0]
    paths = {
        (name, seed): best_checkpoint_path(args.checkpoints / f"{trial_name(cfg, name, fraction, seed)}.pt")
        for name in args.strategy
        for seed in cfg.train.seeds
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        parser.error(
            f"--checkpoints {args.checkpoints}: no best checkpoint {missing[0]}; give the job's folder"
        )
    data = prepare_data(cfg, echo=lambda _: None)
    if point.label not in data.classes:
        parser.error(f"train.operating_point.label {point.label!r}: not a class ({', '.join(data.classes)})")
    index = data.classes.index(point.label)
    y = {split: data.windows[split].y for split in ("val", "test")}
    device = torch.device("cpu")
    print(
        f"{cfg.name}: val {len(y['val'])}, test {len(y['test'])}; "
        f"recall target {point.recall:g} for {point.label!r}"
    )
    print(
        "model | offset | val acc / recall (argmax) | test acc / recall (argmax) | "
        "val acc / recall (offset) | test acc / recall (offset)"
    )
    for strategy in cfg.train.strategies:
        if strategy.name not in args.strategy:
            continue
        members: list[dict[str, np.ndarray]] = []
        for seed in cfg.train.seeds:
            model = load_best(cfg, len(data.classes), paths[strategy.name, seed])
            members.append({s: predict_logits(model, data.images[s], device=device).numpy() for s in y})
        mean = {s: np.mean([m[s] for m in members], axis=0) for s in y}
        rows = [(f"{strategy.name} seed {seed}", m) for seed, m in zip(cfg.train.seeds, members)]
        for label, logits in [*rows, (f"{strategy.name} mean of {len(members)} seeds' logits", mean)]:
            offset = choose_offset(logits["val"], y["val"], index, point.recall).offset
            cells = [scores(logits[s], y[s], index, o) for o in (0.0, offset) for s in ("val", "test")]
            print(f"{label} | {offset:+.3f} | " + " | ".join(f"{a:.3f} / {r:.3f}" for a, r in cells))


if __name__ == "__main__":
    main()
