"""Which frequencies and times a network looks at: relevance maps on the Hz x time axes of its inputs.

Two attribution methods from Captum, both computed on the PyTorch network (an ONNX model has no
gradients):

- ``gradcam``: Grad-CAM on the backbone's registered explanation layer (`models.explain_layer`):
  the deepest layer at stride 8 of the input, an 8 x 8 map at 64 px. The last feature map of
  EfficientNet-Lite0 is 2 x 2 at 64 px and cannot tell two frequency bands apart; the stride-8
  map gives 8 bands on the frequency axis (see `image_axes` for their edges in Hz).
- ``ig``: Integrated Gradients at input resolution (one value per image pixel), from the
  "silent" image (every pixel at the dB floor) to the input, 32 steps.

A map is non-negative and sums to 1 (Grad-CAM after its ReLU, upsampled bilinearly to the
image; IG as the absolute value of the attribution summed over the channels). Its band profile
is the relevance summed over time, per band of rows, with the band edges in Hz: rows follow the
transform (row 0 the lowest frequency, log-spaced for the CWT, linear for the STFT). Images
without a frequency axis (grid, GAF, defect images) get pixel axes and bands of pixel rows.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import decision_model, explain_layer
from pipeline.errors import UserError

METHODS = ("gradcam", "ig")
IG_STEPS = 32  # integration steps of Integrated Gradients
IG_ROWS_PER_BAND = 4  # IG is at input resolution; its profile groups 4 image rows per band
PER_CLASS = 32  # the job explains at most this many correctly classified test samples per class
ARTIFACT_DIR = "explain"  # the child run's folder: <class>.png, classes.png, band_profiles.json


# ----------------------------------------------------------------------------- the axes of an image


@dataclass(frozen=True)
class ImageAxes:
    """What the rows and columns of the network's input images mean.

    Attributes:
        row_unit: ``Hz`` (rows are frequencies, row 0 the lowest) or ``px`` (image rows, row 0 the top).
        col_unit: ``s`` (seconds from the start of the window) or ``px``.
        log: the rows are log-spaced in frequency (CWT); linear otherwise (STFT, pixels).
        row_edges: (S + 1,) increasing edges of the S image rows (Hz or pixels).
        col_edges: (S + 1,) increasing edges of the S image columns (seconds or pixels).
    """

    row_unit: str
    col_unit: str
    log: bool
    row_edges: np.ndarray
    col_edges: np.ndarray

    @property
    def has_hz(self) -> bool:
        return self.row_unit == "Hz"

    @property
    def row_centres(self) -> np.ndarray:
        """Centre of each image row: geometric for log-spaced rows, arithmetic otherwise."""
        lo, hi = self.row_edges[:-1], self.row_edges[1:]
        return np.sqrt(lo * hi) if self.log else (lo + hi) / 2

    def band_edges(self, bands: int) -> np.ndarray:
        """(bands + 1,) edges (Hz or pixels) of `bands` equal groups of image rows."""
        return self.row_edges[_band_bounds(len(self.row_edges) - 1, bands)]


def _band_bounds(rows: int, bands: int) -> np.ndarray:
    """First row of each of `bands` groups of consecutive rows, and the end (rows)."""
    return np.linspace(0, rows, max(1, min(bands, rows)) + 1).round().astype(int)


def _at(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """`values` (indexed 0..n-1) at fractional positions, linear in between and beyond the ends."""
    i = np.clip(np.floor(pos).astype(int), 0, len(values) - 2)
    return values[i] + (pos - i) * (values[i + 1] - values[i])


def image_axes(transform: Any, window_length: int | None = None) -> ImageAxes:
    """The axes of `transform`'s images: Hz x seconds for the CWT and STFT, pixels otherwise.

    The transform resizes its (frequency, time) magnitude bilinearly (``align_corners=False``) to
    S x S, so the edge of image row k sits at source row ``k * F / S - 0.5``; its frequency follows
    the transform's own spacing (log for the CWT's geometric scales, linear for the FFT bins).

    Args:
        window_length: samples per window (the seconds axis); None: pixels on the time axis.
    """
    s = int(transform.image_size)
    pixels = np.arange(s + 1, dtype=float)
    if getattr(transform, "kind", "") not in ("cwt", "stft"):
        return ImageAxes("px", "px", False, pixels, pixels)
    freqs = np.asarray(transform.frequencies(window_length or s), dtype=float)
    log = transform.kind == "cwt"
    pos = pixels * len(freqs) / s - 0.5
    if log:
        rows = np.minimum(np.exp(_at(np.log(freqs), pos)), transform.fs / 2)
    else:
        rows = np.clip(_at(freqs, pos), 0.0, transform.fs / 2)
    if window_length is None:
        return ImageAxes("Hz", "px", log, rows, pixels)
    if transform.kind == "cwt":  # one magnitude column per sample
        cols = pixels * window_length / s / transform.fs
    else:  # one column per frame, centred on its segment
        frames = 1 + (window_length - transform.nperseg) // transform.hop
        centres = (np.arange(frames) * transform.hop + transform.nperseg / 2) / transform.fs
        cols = (
            _at(centres, pixels * frames / s - 0.5)
            if frames > 1
            else np.linspace(0, window_length / transform.fs, s + 1)
        )
    return ImageAxes("Hz", "s", log, rows, cols)


def unit_view(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Network inputs (N, C, S, S) back to [0, 1] (undoing the mean/std), averaged over channels."""
    c = images.shape[1]
    m = torch.tensor(list(mean)[:c], dtype=images.dtype).view(1, c, 1, 1)
    s = torch.tensor(list(std)[:c], dtype=images.dtype).view(1, c, 1, 1)
    return (images.detach().cpu() * s + m).mean(dim=1).clamp(0, 1).numpy()


# ----------------------------------------------------------------------------- attribution


@dataclass(frozen=True)
class Attribution:
    """Relevance maps of a batch.

    Attributes:
        maps: (N, S, S) float64, each non-negative and summing to 1 (rows as the input's).
        method: ``gradcam`` or ``ig``.
        layer: the explained layer's module path (Grad-CAM), ``input`` (IG).
        map_rows: rows of the map before upsampling: the resolution on the frequency axis.
    """

    maps: np.ndarray
    method: str
    layer: str
    map_rows: int

    @property
    def bands(self) -> int:
        """Bands of the profile: one per map row (Grad-CAM), `IG_ROWS_PER_BAND` image rows (IG)."""
        return self.map_rows if self.method == "gradcam" else max(1, self.map_rows // IG_ROWS_PER_BAND)


def check_method(method: str) -> str:
    """`method` if it is one of `METHODS`; UserError naming ``--method`` otherwise."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {list(METHODS)}, got {method!r}")
    return method


def floor_baseline(mean: Sequence[float], std: Sequence[float], channels: int) -> torch.Tensor:
    """(1, C, 1, 1): the network input of an image at the dB floor everywhere (unit value 0)."""
    m = torch.tensor(list(mean)[:channels], dtype=torch.float32)
    s = torch.tensor(list(std)[:channels], dtype=torch.float32)
    return (-m / s).view(1, channels, 1, 1)


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    *,
    backbone: str,
    method: str = "gradcam",
    baseline: torch.Tensor | None = None,
    batch_size: int = 32,
    steps: int = IG_STEPS,
) -> Attribution:
    """Relevance of every input pixel for its target class, batched (`batch_size` inputs at a time).

    Args:
        model: the network (put in eval mode; on its own device).
        inputs: (N, C, S, S) network inputs (normalised, as the network was trained on).
        targets: the class index to explain, per input.
        backbone: the registry name (its `models.explain_layer` is Grad-CAM's layer).
        baseline: IG's starting point, (1, C, 1, 1) or like `inputs` (default: zeros).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    check_method(method)
    model.eval()
    device = next(model.parameters()).device
    n, _, h, w = inputs.shape
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if len(target) != n:
        raise ValueError(f"{n} inputs but {len(target)} targets")
    layer_path = explain_layer(backbone) if method == "gradcam" else "input"
    map_rows = h
    out: list[torch.Tensor] = []
    with torch.enable_grad():
        for start in range(0, n, batch_size):
            x = inputs[start : start + batch_size].to(device).clone().requires_grad_(True)
            t = target[start : start + batch_size].to(device)
            if method == "gradcam":
                cam = LayerGradCam(model, model.get_submodule(layer_path))
                raw = cam.attribute(x, target=t, relu_attributions=True)
                map_rows = int(raw.shape[-2])
                maps = LayerAttribution.interpolate(raw, (h, w), interpolate_mode="bilinear")[:, 0]
            else:
                base = torch.zeros_like(x) if baseline is None else baseline.to(device).expand_as(x)
                ig = IntegratedGradients(model).attribute(
                    x, baselines=base, target=t, n_steps=steps, internal_batch_size=max(batch_size, 8)
                )
                maps = ig.sum(dim=1).abs()
            out.append(maps.detach().float().cpu().clamp_min(0))
    maps_np = torch.cat(out).double().numpy() if out else np.zeros((0, h, w))
    return Attribution(normalise_maps(maps_np), method, layer_path, map_rows)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each (S, S) map scaled to sum 1; an all-zero map (nothing speaks for the class) becomes uniform."""
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    total = maps.sum(axis=(-2, -1), keepdims=True)
    uniform = np.full_like(maps, 1.0 / (maps.shape[-1] * maps.shape[-2]))
    return np.where(total > 0, maps / np.where(total > 0, total, 1), uniform)


# ----------------------------------------------------------------------------- band profiles


def row_profile(heat: np.ndarray) -> np.ndarray:
    """(S,) relevance per image row (summed over time), summing to 1."""
    rows = np.asarray(heat, dtype=np.float64).sum(axis=-1)
    return rows / rows.sum() if rows.sum() > 0 else np.full(len(rows), 1.0 / len(rows))


def band_profile(heat: np.ndarray, axes: ImageAxes, bands: int) -> list[dict[str, float]]:
    """Relevance summed over time per band of rows, lowest band first, summing to 1.

    Each band is ``{hz_low, hz_high, relevance}`` (``row_low, row_high`` in pixels for images
    without a frequency axis, row 0 the top).
    """
    rows = row_profile(heat)
    bounds = _band_bounds(len(rows), bands)
    low, high = ("hz_low", "hz_high") if axes.has_hz else ("row_low", "row_high")
    return [
        {
            low: float(axes.row_edges[a]),
            high: float(axes.row_edges[b]),
            "relevance": float(rows[a:b].sum()),
        }
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def band_label(band: dict[str, float]) -> str:
    """``2.1-3.2 kHz``, ``450-690 Hz`` or ``rows 16-24``."""
    if "hz_low" not in band:
        return f"rows {band['row_low']:.0f}-{band['row_high']:.0f}"
    lo, hi = band["hz_low"], band["hz_high"]
    if hi >= 1000:
        return f"{lo / 1000:.2g}-{hi / 1000:.2g} kHz"
    return f"{lo:.0f}-{hi:.0f} Hz"


def top_bands(profile: Sequence[dict[str, float]], n: int = 3) -> str:
    """The `n` most relevant bands with their shares: ``2.1-3.2 kHz 41 %, ...``."""
    best = sorted(profile, key=lambda b: -b["relevance"])[:n]
    return ", ".join(f"{band_label(b)} {100 * b['relevance']:.0f} %" for b in best)


def band_fraction(heat: np.ndarray, axes: ImageAxes, low_hz: float, high_hz: float) -> float:
    """Share of the relevance in the rows whose centre frequency lies in [low_hz, high_hz]."""
    inside = (axes.row_centres >= low_hz) & (axes.row_centres <= high_hz)
    return float(row_profile(heat)[inside].sum())


def uniform_fraction(axes: ImageAxes, low_hz: float, high_hz: float) -> float:
    """What `band_fraction` gives for a uniform map: the share of rows inside the band."""
    s = len(axes.row_edges) - 1
    return band_fraction(np.ones((s, s)), axes, low_hz, high_hz)


# ----------------------------------------------------------------------------- figures


def _draw_map(ax: Any, image: np.ndarray, heat: np.ndarray, axes: ImageAxes) -> None:
    x, y = axes.col_edges, axes.row_edges
    ax.pcolormesh(x, y, image, cmap="gray", vmin=0, vmax=1, shading="flat")
    peak = float(heat.max()) or 1.0
    ax.pcolormesh(x, y, heat / peak, cmap="jet", vmin=0, vmax=1, alpha=0.45, shading="flat")
    if axes.log:
        ax.set_yscale("log")
        _hz_ticks(ax, float(y[0]), float(y[-1]))
    ax.set_ylim(y[0], y[-1])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (Hz)" if axes.has_hz else "row (px)")
    ax.set_xlabel("time in window (s)" if axes.col_unit == "s" else "column (px)")
    if not axes.has_hz:
        ax.invert_yaxis()  # pixel row 0 at the top, as the image is seen


def _hz_ticks(ax: Any, low: float, high: float) -> None:
    """Log-frequency ticks at 1, 2 and 5 x 10^k Hz, labelled ``200``, ``1k``, ``5k``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ticks = [
        m * 10.0**e
        for e in range(int(np.floor(np.log10(max(low, 1e-3)))), int(np.ceil(np.log10(high))) + 1)
        for m in (1, 2, 5)
        if low <= m * 10.0**e <= high
    ]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _draw_profile(ax: Any, profile: Sequence[dict[str, float]], axes: ImageAxes) -> None:
    low, high = ("hz_low", "hz_high") if axes.has_hz else ("row_low", "row_high")
    ax.barh(
        [b[low] for b in profile],
        [b["relevance"] for b in profile],
        height=[b[high] - b[low] for b in profile],
        align="edge",
        color="C3",
        edgecolor="white",
    )
    ax.set_xlabel("share of relevance")
    ax.set_xlim(0, max(b["relevance"] for b in profile) * 1.15 or 1)


def explanation_figure(
    image: np.ndarray, heat: np.ndarray, axes: ImageAxes, profile: Sequence[dict[str, float]], title: str
) -> Any:
    """The input image with its axes, the heat map over it, and the band profile beside it."""
    from pipeline.plots import plt

    fig, (ax, side) = plt.subplots(
        1, 2, figsize=(9.5, 4.4), sharey=True, gridspec_kw={"width_ratios": [3, 1.2]}
    )
    _draw_map(ax, image, heat, axes)
    _draw_profile(side, profile, axes)
    side.set_title("relevance over time, per band", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def classes_figure(explained: Sequence[ClassExplanation], axes: ImageAxes, title: str) -> Any:
    """One column per class: the mean image with the mean heat map, and its band profile below."""
    from pipeline.plots import plt

    n = max(1, len(explained))
    fig, grid = plt.subplots(2, n, figsize=(2.7 * n + 0.6, 6.2), squeeze=False, sharey=True)
    for k, ex in enumerate(explained):
        _draw_map(grid[0][k], ex.image, ex.heat, axes)
        grid[0][k].set_title(f"{ex.label} (n={ex.samples})", fontsize=9)
        _draw_profile(grid[1][k], ex.profile, axes)
        grid[1][k].set_title(top_bands(ex.profile, 1), fontsize=8)
        if k:
            grid[0][k].set_ylabel("")
            grid[1][k].set_ylabel("")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the job's explanations


@dataclass
class ClassExplanation:
    """The mean relevance map of one class over the test samples classified correctly."""

    label: str
    samples: int
    image: np.ndarray  # (S, S) mean input in [0, 1]
    heat: np.ndarray  # (S, S) mean map, sums to 1
    profile: list[dict[str, float]] = field(default_factory=list)


def pick_correct(y: np.ndarray, pred: np.ndarray, n_classes: int, per_class: int = PER_CLASS) -> np.ndarray:
    """Indices of at most `per_class` correctly classified samples per class, evenly spread, sorted."""
    chosen: list[np.ndarray] = []
    for c in range(n_classes):
        hits = np.flatnonzero((y == c) & (pred == c))
        if len(hits) > per_class:
            hits = hits[np.linspace(0, len(hits) - 1, per_class).round().astype(int)]
        chosen.append(hits)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def explain_classes(
    model: nn.Module,
    images: torch.Tensor,
    y: np.ndarray,
    pred: np.ndarray,
    classes: Sequence[str],
    *,
    backbone: str,
    transform: Any,
    axes: ImageAxes,
    method: str = "gradcam",
    per_class: int = PER_CLASS,
) -> tuple[list[ClassExplanation], Attribution]:
    """Per class, the mean map over (at most `per_class`) test samples it classified correctly;
    classes without such a sample are left out."""
    index = pick_correct(np.asarray(y), np.asarray(pred), len(classes), per_class)
    inputs = images[torch.from_numpy(index)] if len(index) else images[:0]
    targets = np.asarray(y)[index]
    baseline = floor_baseline(transform.mean, transform.std, images.shape[1])
    attr = attribute(model, inputs, targets, backbone=backbone, method=method, baseline=baseline)
    unit = unit_view(inputs, transform.mean, transform.std)
    out = []
    for c, label in enumerate(classes):
        mine = targets == c
        if not mine.any():
            continue
        heat = attr.maps[mine].mean(axis=0)
        profile = band_profile(heat, axes, attr.bands)
        out.append(ClassExplanation(label, int(mine.sum()), unit[mine].mean(axis=0), heat, profile))
    return out, attr


def safe_name(label: str) -> str:
    """A class name as a file name (letters, digits, ``-``, ``_`` and ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label) or "_"


def log_job_explanations(
    model: nn.Module,
    data: Any,
    probabilities: np.ndarray,
    *,
    backbone: str,
    name: str,
) -> list[ClassExplanation]:
    """The trial's per-class explanations as artifacts of the active run: ``explain/<class>.png``,
    ``explain/classes.png`` (every class side by side) and ``explain/band_profiles.json``."""
    import time

    import mlflow

    from pipeline.plots import to_png

    started = time.perf_counter()
    window = data.window["length"] if data.window else None
    axes = image_axes(data.transform, window)
    y = data.windows["test"].y
    explained, attr = explain_classes(
        model,
        data.images["test"],
        y,
        np.asarray(probabilities).argmax(axis=1),
        data.classes,
        backbone=backbone,
        transform=data.transform,
        axes=axes,
    )
    where = "layer " + attr.layer
    doc: dict[str, Any] = {
        "method": attr.method,
        "layer": attr.layer,
        "map_rows": attr.map_rows,
        "axis": "Hz" if axes.has_hz else "px",
        "log_frequency": axes.log,
        "band_edges": [float(e) for e in axes.band_edges(attr.bands)],
        "per_class_limit": PER_CLASS,
        "classes": {
            ex.label: {"samples": ex.samples, "top_bands": top_bands(ex.profile), "bands": ex.profile}
            for ex in explained
        },
        "no_correct_sample": [c for c in data.classes if c not in {ex.label for ex in explained}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for ex in explained:
            title = (
                f"{name}: {ex.label}, mean Grad-CAM ({where}) over {ex.samples} correct test samples\n"
                f"top bands: {top_bands(ex.profile)}"
            )
            png = to_png(explanation_figure(ex.image, ex.heat, axes, ex.profile, title))
            (folder / f"{safe_name(ex.label)}.png").write_bytes(png)
        if explained:
            title = f"{name}: mean Grad-CAM ({where}) per class, correct test samples"
            (folder / "classes.png").write_bytes(to_png(classes_figure(explained, axes, title)))
        (folder / "band_profiles.json").write_text(json.dumps(doc, indent=2))
        mlflow.log_artifacts(tmp, artifact_path=ARTIFACT_DIR)
    mlflow.log_metric("explain_seconds", time.perf_counter() - started)
    return explained


# ----------------------------------------------------------------------------- `pipeline explain`


@dataclass(frozen=True)
class ExplainModel:
    """The PyTorch network behind a model URI, with what feeds it.

    `network` is the single-view network Grad-CAM explains; `decision` the model as the exported
    graph decides (its test-time views and class offset, `models.decision_model`; None: `network`),
    which names the predicted class.
    """

    network: nn.Module
    backbone: str
    metadata: Any  # deploy.metadata.ModelMetadata
    run_id: str
    decision: nn.Module | None = None


ONNX_REFUSAL = (
    "--model {source}: an ONNX file has no gradients, and explanations need them; pass the registry URI "
    "(models:/NAME@ALIAS or models:/NAME/VERSION) or the run id (runs:/RUN_ID) of the `pipeline run` job "
    "that trained it: explain loads the PyTorch weights logged with that run"
)


def resolve_model(source: str, *, tracking_uri: str | None = None) -> ExplainModel:
    """The network to explain: a ``models:/`` URI (its version's ``run_id`` tag is the job's run),
    ``runs:/RUN_ID`` or a run id; the job's run holds the ONNX model (its metadata: classes,
    transform, window) and the PyTorch weights (``pytorch-model/``).

    Raises:
        UserError: naming ``--model``: an ONNX (or other) file, an unknown version or run.
    """
    if source.lower().endswith(".onnx") or Path(source).is_file():  # said before MLflow is imported
        raise UserError(ONNX_REFUSAL.format(source=source))
    import mlflow
    from mlflow.exceptions import MlflowException

    from deploy.metadata import ModelMetadata
    from deploy.store import check_model_uri, check_server, download_model, resolve_tracking_uri, use_store
    from pipeline.export import load_pytorch_model

    check_model_uri(source)
    store = resolve_tracking_uri(tracking_uri)
    check_server(store, source="--tracking-uri")
    use_store(store)
    client = mlflow.MlflowClient(store)
    if source.startswith("models:/"):
        run_id = _version_run_id(client, source)
        meta_uri = source
    else:
        run_id = (
            source.removeprefix("runs:/").strip("/").split("/")[0] if source.startswith("runs:") else source
        )
        if not re.fullmatch(r"[A-Za-z0-9_-]+", run_id):
            raise UserError(
                f"--model {source!r}: not a run id; give models:/NAME@ALIAS, models:/NAME/VERSION, "
                "runs:/RUN_ID or a run id"
            )
        try:
            client.get_run(run_id)
        except MlflowException:
            raise UserError(f"--model {source!r}: no run {run_id!r} in the store {store}") from None
        meta_uri = f"runs:/{run_id}/model"
    hint = "give the job's run (it holds model/ and pytorch-model/), not a trial's"
    try:
        metadata = ModelMetadata.from_onnx(download_model(meta_uri, tracking_uri=store))
        network = load_pytorch_model(run_id, tracking_uri=store)
    except UserError as exc:
        raise UserError(f"--model {source!r}: {exc}; {hint}") from None
    backbone = metadata.model.backbone or _logged_backbone(run_id)
    decision = decision_model(network, backbone, metadata.model.tta or "none", metadata.model.class_offsets)
    return ExplainModel(network, backbone, metadata, run_id, decision.eval())


def _version_run_id(client: Any, uri: str) -> str:
    """The ``run_id`` tag of the registered version `uri` names (the version's run otherwise)."""
    from mlflow.exceptions import MlflowException

    rest = uri.removeprefix("models:/")
    name, at, alias = rest.partition("@")
    try:
        if at:
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = rest.rpartition("/")
            version = client.get_model_version(name, number)
    except MlflowException as exc:
        raise UserError(f"--model {uri!r}: no such registered version ({exc.message})") from None
    run_id = version.tags.get("run_id") or version.run_id
    if not run_id:
        raise UserError(f"--model {uri!r}: the version has no run_id tag: it was not registered by a job")
    return str(run_id)


def _logged_backbone(run_id: str) -> str:
    import mlflow

    from pipeline.export import PYTORCH_ARTIFACTS

    return str(
        mlflow.artifacts.load_dict(f"runs:/{run_id}/{PYTORCH_ARTIFACTS}/architecture.json")["backbone"]
    )


@dataclass
class FileExplanation:
    """One explained file: its verdict, its band profile and the PNG written."""

    file: str
    label: str
    target: str
    windows: int
    png: Path
    profile: list[dict[str, float]]
    method: str
    layer: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "label": self.label,
            "target": self.target,
            "method": self.method,
            "layer": self.layer,
            "windows": self.windows,
            "png": str(self.png),
            "bands": self.profile,
        }


def file_inputs(
    file: str, metadata: Any, transform: Any, *, fs: float | None, max_windows: int
) -> torch.Tensor:
    """A signal file's windows (at most `max_windows`, evenly spread) or an image, as network inputs.

    Raises:
        UserError: naming the file: unreadable, another rate, wrong channels, too short.
    """
    import math

    from deploy.signal_request import prepare_signal
    from pipeline.ingest.files import read_signal_file
    from signal2image.imageio import decode_image

    if metadata.is_image:
        try:
            image = decode_image(file)
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(f"{file}: not a readable image ({exc})") from None
        return transform([image])
    loaded = read_signal_file(file)
    if fs is not None and loaded.fs is not None and not math.isclose(loaded.fs, fs, rel_tol=1e-6):
        raise UserError(
            f"{file}: the file declares fs = {loaded.fs:g} Hz but --fs is {fs:g} Hz; "
            "drop --fs or fix the file"
        )
    try:
        windows = prepare_signal(
            metadata, loaded.data, loaded.fs if fs is None else fs, names=loaded.channels
        )
    except UserError as exc:
        raise UserError(f"{file}: {exc}") from None
    if len(windows) > max_windows:
        windows = windows[np.linspace(0, len(windows) - 1, max_windows).round().astype(int)]
    return transform(windows)


def explain_files(
    model: ExplainModel,
    files: Sequence[str],
    *,
    method: str = "gradcam",
    out: Path = Path("explanations"),
    target: str | None = None,
    fs: float | None = None,
    max_windows: int = 32,
) -> list[FileExplanation]:
    """`pipeline explain`: per file, the PNG (image, heat map, band profile) in `out`, and its profile.

    A signal file is cut into the model's windows (at most `max_windows`); the map and image shown
    are their means (time is the time within a window), the target the class of the mean
    probability (or `target`).

    Raises:
        UserError: naming ``--method``, ``--target`` or the file.
    """
    from pipeline.plots import to_png
    from signal2image import from_dict

    check_method(method)
    meta = model.metadata
    classes = list(meta.classes)
    if target is not None and target not in classes:
        raise UserError(f"--target {target!r} is not a class of this model; its classes: {classes}")
    transform = from_dict(dict(meta.transform))
    axes = image_axes(transform, meta.window_length)
    baseline = floor_baseline(transform.mean, transform.std, int(transform.channels))
    net = model.network.eval()
    decide = (model.decision or net).eval()
    out.mkdir(parents=True, exist_ok=True)
    results: list[FileExplanation] = []
    used: set[str] = set()
    for file in files:
        inputs = file_inputs(file, meta, transform, fs=fs, max_windows=max_windows)
        with torch.no_grad():
            probs = torch.softmax(decide(inputs), dim=1).mean(dim=0).numpy()
        label = classes[int(probs.argmax())]
        chosen = target or label
        attr = attribute(
            net,
            inputs,
            [classes.index(chosen)] * len(inputs),
            backbone=model.backbone,
            method=method,
            baseline=baseline,
        )
        heat = attr.maps.mean(axis=0)
        profile = band_profile(heat, axes, attr.bands)
        image = unit_view(inputs, transform.mean, transform.std).mean(axis=0)
        what = "Grad-CAM on " + attr.layer if method == "gradcam" else "integrated gradients"
        mean_of = f", mean of {len(inputs)} windows" if not meta.is_image else ""
        title = (
            f"{Path(file).name}: {label} (p={probs.max():.2f}); relevance for {chosen!r} ({what}{mean_of})\n"
            f"top bands: {top_bands(profile)}"
        )
        stem = safe_name(Path(file).stem)
        name, k = f"{stem}.{method}.png", 1
        while name in used:
            k += 1
            name = f"{stem}-{k}.{method}.png"
        used.add(name)
        png = out / name
        png.write_bytes(to_png(explanation_figure(image, heat, axes, profile, title)))
        results.append(
            FileExplanation(file, label, chosen, len(inputs), png, profile, attr.method, attr.layer)
        )
    return results
