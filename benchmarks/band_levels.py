"""What the rows of a job's signal image hold: a logistic regression on each row's mean over time (the
band levels the image keeps), C chosen on validation, test only reported. It shows how much of a
spectrum model's information survives the transform's settings (dB range, level, STFT or CWT) before
any network is trained.

    python benchmarks/band_levels.py configs/forda.yaml [--set transform.floor_db=-40 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.baselines import C_GRID  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import prepare_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cfg = load_config(args.config, args.overrides)
    data = prepare_data(cfg, echo=lambda _: None)
    rows = {k: data.images[k].mean(dim=(1, 3)).numpy() for k in ("train", "val", "test")}
    y = {k: data.windows[k].y for k in rows}
    scaler = StandardScaler().fit(rows["train"])
    x = {k: scaler.transform(v) for k, v in rows.items()}
    best: tuple[float, float, float] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
        val = float(np.mean(model.predict(x["val"]) == y["val"]))
        if best is None or val > best[0]:
            best = (val, c, float(np.mean(model.predict(x["test"]) == y["test"])))
    assert best is not None
    t = cfg.transform
    print(
        f"{t.kind} floor {t.floor_db:g} dB level {t.level} ({rows['train'].shape[1]} rows): "
        f"val {best[0]:.4f} (C {best[1]:g}), test {best[2]:.4f}"
    )


if __name__ == "__main__":
    main()
