"""What the rows of a job's signal image hold: the baselines' logistic regression
(`pipeline.baselines.fit_logreg`, C chosen on validation, test only reported) on each row's mean
over time, the band levels the image keeps. It shows how much of a spectrum model's information
survives the transform's settings (dB range, level, STFT or CWT) before any network is trained.

    python benchmarks/band_levels.py configs/forda.yaml [--set transform.floor_db=-40 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.baselines import fit_logreg  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import prepare_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    data = prepare_data(cfg, echo=lambda _: None)

    def band_levels(images: torch.Tensor) -> np.ndarray:
        return images.mean(dim=(1, 3)).numpy().astype(np.float64)

    split = {k: (data.images[k], data.windows[k].y) for k in ("train", "val", "test")}
    fit = fit_logreg(
        "band_levels", band_levels, split["train"], split["val"], n_classes=len(data.classes), seed=0
    )
    test = float(np.mean(fit.predict_proba(split["test"][0]).argmax(1) == split["test"][1]))
    t = cfg.transform
    print(
        f"{t.kind} floor {t.floor_db:g} dB level {t.level} ({t.image_size} rows): "
        f"val {fit.val_accuracy:.4f} (C {fit.c:g}), test {test:.4f}"
    )


if __name__ == "__main__":
    main()
