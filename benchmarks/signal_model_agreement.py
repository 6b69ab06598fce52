"""How the raw-signal model and today's transform agree, on the whole test split of a job.

For the model a job exported (its `model.onnx`, with `model.signal.onnx` beside it, built here when
missing) and the job's config:

1. the in-graph transform (`signal2image.onnx_graph`) against the Python transform on every test
   window: max |image difference| (network input scale and [0, 1] scale);
2. the raw-signal model against the Python transform + image model: prediction agreement and
   max |logit difference|, and both accuracies;
3. the image computed at the image's resolution (``sampling: output``, what the model was trained
   on) against the previous transform (``sampling: full``: pywt's filters at every sample, resized):
   max and mean |difference| of the [0, 1] images, and the same network's predictions on both.

    python benchmarks/signal_model_agreement.py configs/gearbox.yaml \
        --model artifacts/gearbox/<run>/model.onnx
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import signal2image  # noqa: E402
from deploy.inferencer import OnnxInferencer, create_session  # noqa: E402
from deploy.signal_model import build_signal_model, signal_model_path  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import prepare_data  # noqa: E402
from signal2image.onnx_graph import transform_model  # noqa: E402


def logits(session, name: str, x: np.ndarray, batch: int = 64) -> np.ndarray:  # noqa: ANN001
    return np.concatenate(
        [session.run(["logits"], {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--model", type=Path, required=True, help="the job's model.onnx (the image model)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    data = prepare_data(cfg, echo=lambda line: None)
    image = OnnxInferencer(args.model, prefer_signal_model=False)
    transform = data.transform
    raw_path = signal_model_path(args.model)
    if not raw_path.is_file():
        raw_path = Path(tempfile.mkdtemp()) / "model.signal.onnx"
        onnx.save(build_signal_model(onnx.load(str(args.model)), transform), str(raw_path))
    cpu = ["CPUExecutionProvider"]
    windows = np.ascontiguousarray(data.windows["test"].x, dtype=np.float32)
    labels = np.asarray(data.windows["test"].y)
    python_inputs = data.images["test"].numpy()
    graph_path = Path(tempfile.mkdtemp()) / "transform.onnx"
    onnx.save(transform_model(transform, length=windows.shape[-1], sensors=windows.shape[1]), str(graph_path))
    graph = create_session(graph_path, providers=cpu)
    graph_inputs = np.concatenate(
        [graph.run(None, {"signal": windows[i : i + 64]})[0] for i in range(0, len(windows), 64)]
    )
    std = np.asarray(transform.std).reshape(1, -1, 1, 1)
    diff = np.abs(graph_inputs - python_inputs)
    print(f"{len(windows)} test windows, transform {transform.kind} ({dict(transform.to_dict())})")
    print(
        f"1. in-graph transform vs Python transform: max |diff| {diff.max():.2e} (network input), "
        f"{(diff * std).max():.2e} ([0, 1] image)"
    )
    raw = create_session(raw_path, providers=cpu)
    got = logits(raw, "signal", windows)
    want = logits(image.session, "input", python_inputs)
    same = got.argmax(1) == want.argmax(1)
    print(
        f"2. raw-signal model vs Python transform + image model: same class on {same.mean() * 100:.2f} % "
        f"({same.sum()}/{len(got)}), max |logit diff| {np.abs(got - want).max():.2e}; accuracy "
        f"{np.mean(got.argmax(1) == labels):.4f} vs {np.mean(want.argmax(1) == labels):.4f}"
    )
    if transform.kind == "cwt" and transform.sampling == "output":
        spec = {**transform.to_dict(), "sampling": "full"}
        old = signal2image.from_dict(spec)
        old.mean, old.std = transform.mean, transform.std
        new_unit = transform.unit_images(windows).numpy()
        old_unit = old.unit_images(windows).numpy()
        d = np.abs(new_unit - old_unit)
        old_logits = logits(image.session, "input", old(windows).numpy())
        same = old_logits.argmax(1) == want.argmax(1)
        print(
            f"3. sampling output vs full (previous transform), [0, 1] images: max |diff| {d.max():.3f}, mean "
            f"{d.mean():.5f}, 99.9th percentile {np.quantile(d, 0.999):.3f}; this network's class is the "
            f"same on {same.mean() * 100:.2f} % of the test windows; accuracy on the previous images "
            f"{np.mean(old_logits.argmax(1) == labels):.4f} (trained on sampling output: "
            f"{np.mean(want.argmax(1) == labels):.4f})"
        )


if __name__ == "__main__":
    main()
