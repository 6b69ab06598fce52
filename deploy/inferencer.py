"""A small inferencer: an ONNX model plus the transform rebuilt from the model's own metadata.

A raw-signal model (`deploy.signal_model`: the transform inside the graph) needs no transform here:
windows go straight into ONNX Runtime, and the path imports neither torch nor the Python
transforms. A signal model whose raw-signal model lies beside it (``model.signal.onnx``) is served
by that one unless ``prefer_signal_model=False``.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deploy.metadata import FEATURES_OUTPUT, PROFILE_OUTPUT, ModelMetadata
from deploy.signal_model import signal_model_path
from deploy.signal_request import RequestError, prepare_signal, probabilities
from signal2image.errors import UserError
from signal2image.onnx_graph import SIGNAL_INPUT
from signal2image.prepare import zscore

log = logging.getLogger(__name__)


def cuda_usable() -> bool:
    """True when ONNX Runtime has its CUDA provider and the CUDA driver library loads."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def choose_providers(preference: str = "auto") -> list[str]:
    """CUDA first when usable (preference 'auto' or 'cuda'), the CPU always as the fallback."""
    if preference in ("auto", "cuda"):
        if cuda_usable():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.info("CUDA execution provider not usable here (no CUDA driver); running on the CPU")
    return ["CPUExecutionProvider"]


def create_session(
    path: str | Path, *, providers: list[str] | None = None, threads: int | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime session on `path` with every graph optimisation and only errors logged.

    Args:
        providers: execution providers (default: `choose_providers()`, CUDA when usable).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or choose_providers())


@dataclass(frozen=True)
class SignalPrediction:
    """The verdict for one signal: the class of the mean probability over its windows."""

    label: str
    probabilities: dict[str, float]
    window_labels: list[str]


@dataclass(frozen=True)
class BatchOutput:
    """One model run: probabilities, the rows that cannot be trusted ({row: reason}), and what the
    drift watch reads: the ``features`` output (None for a model exported without it) and the
    network inputs (N, C, H, W), or of a raw-signal model their ``profile`` (N, H)."""

    probs: np.ndarray
    problems: dict[int, str]
    features: np.ndarray | None = None
    inputs: np.ndarray | None = None


class OnnxInferencer:
    """Loads an exported model and predicts from raw windows, whole signals or network inputs.

    Args:
        path: an .onnx file written by `deploy.onnx_export.export_onnx` or a raw-signal model
            (`deploy.signal_model`).
        providers: ONNX Runtime execution providers (default: CUDA when usable, else CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
        prefer_signal_model: load the raw-signal model beside a signal model's `path` when there
            is one (`deploy.signal_model.signal_model_path`); `path` then names the image model.

    Raises:
        UserError: the file is missing, not a loadable ONNX model, or lacks this project's metadata.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        prefer_signal_model: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"model file {str(self.path)!r} not found")
        raw = signal_model_path(self.path)
        if prefer_signal_model and not self.path.name.endswith(raw.name) and raw.is_file():
            self.path = raw
        try:
            self.session = create_session(self.path, providers=providers, threads=threads)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise UserError(
                f"{self.path} is not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        self.metadata = ModelMetadata.from_props(
            self.session.get_modelmeta().custom_metadata_map, where=str(self.path)
        )
        self.transform: Any = None  # a raw-signal model computes it in its graph
        if not self.metadata.takes_signal:
            import signal2image  # the Python transforms (torch)

            try:
                self.transform = signal2image.from_dict(dict(self.metadata.transform))
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{self.path}: its transform cannot be rebuilt ({exc})") from None
            except ImportError as exc:  # a service installed without torch
                fix = (
                    "export its raw-signal model (pipeline export CONFIG --model MODEL --signal-model) "
                    "and serve the package"
                    if not self.metadata.is_image
                    else "image models need it"
                )
                raise UserError(
                    f"{self.path} needs the Python transform, which needs {exc.name or 'torch'} "
                    f"(not installed): {fix}, or install torch"
                ) from None
        self.classes: list[str] = list(self.metadata.classes)
        self.input_name = self.session.get_inputs()[0].name
        if self.metadata.takes_signal and self.input_name != SIGNAL_INPUT:
            raise UserError(
                f"{self.path}: a raw-signal model's input must be {SIGNAL_INPUT!r}, got {self.input_name!r}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.profile_index = (
            self.output_names.index(PROFILE_OUTPUT) if PROFILE_OUTPUT in self.output_names else None
        )
        # The logits are the first output; models exported with a drift reference also have "features".
        self.features_index = (
            self.output_names.index(FEATURES_OUTPUT) if FEATURES_OUTPUT in self.output_names[1:] else None
        )

    @classmethod
    def from_uri(cls, uri: str, *, tracking_uri: str | None = None, **kwargs: Any) -> OnnxInferencer:
        """A local .onnx path, or a registry URI such as ``models:/gearbox-fault@champion``."""
        if uri.startswith("models:/") or uri.startswith("runs:/"):
            from deploy.store import download_model

            return cls(download_model(uri, tracking_uri=tracking_uri), **kwargs)
        return cls(uri, **kwargs)

    @property
    def is_image(self) -> bool:
        """True for a defect-image model, False for a signal model."""
        return self.metadata.is_image

    @property
    def fs(self) -> float:
        """The sample rate a signal model expects, in Hz."""
        assert self.metadata.fs is not None, "an image model has no sample rate"
        return self.metadata.fs

    @property
    def window_length(self) -> int:
        assert self.metadata.window_length is not None, "an image model has no window"
        return self.metadata.window_length

    @property
    def window_hop(self) -> int:
        assert self.metadata.window_hop is not None, "an image model has no window"
        return self.metadata.window_hop

    @property
    def channels(self) -> list[int | str]:
        return list(self.metadata.channels)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def takes_signal(self) -> bool:
        """True when the loaded graph is a raw-signal model (the transform runs inside it)."""
        return self.metadata.takes_signal

    def predict_inputs(self, images: np.ndarray) -> np.ndarray:
        """Network inputs (N, C, H, W) -> class probabilities (N, n_classes).

        Raises:
            RequestError: an input or an output is not finite (no verdict from an unusable input).
        """
        return _raise_problems(*self.predict_inputs_checked(images))

    def predict_inputs_checked(self, images: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Like `predict_inputs`, but the rows that cannot be trusted are returned as
        {row: reason} instead of raised (their probabilities are NaN): a batch of several requests
        fails only the requests at fault."""
        out = self.run_inputs(images)
        return out.probs, out.problems

    def run_inputs(self, images: np.ndarray) -> BatchOutput:
        """`predict_inputs_checked` with the ``features`` output and the inputs kept (one run gives both)."""
        if self.takes_signal:
            raise UserError("this raw-signal model takes windows, not network inputs (predict_windows)")
        images = np.ascontiguousarray(images, dtype=np.float32)
        probs, problems, outputs = self._run_checked(images, "the network input (after the transform)")
        features = None if self.features_index is None else outputs[self.features_index]
        return BatchOutput(probs, problems, features, images)

    def _run_checked(self, x: np.ndarray, stage: str) -> tuple[np.ndarray, dict[int, str], list[Any]]:
        """Run the session on `x`: (probabilities, the rows made untrustworthy by a non-finite input
        (named `stage`) or output, set to NaN, all outputs)."""
        problems = _non_finite_rows(x, stage)
        outputs = self.session.run(None, {self.input_name: x})
        for row, reason in _non_finite_rows(outputs[0], "the network's output").items():
            problems.setdefault(row, reason)
        probs = _softmax(outputs[0])
        probs[list(problems)] = np.nan
        return probs, problems, outputs

    def predict_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Decoded images (float [0, 1], (H, W) or (H, W, 3), any size) -> probabilities (N, n_classes)."""
        return _raise_problems(*self.predict_images_checked(images))

    def predict_images_checked(self, images: list[np.ndarray]) -> tuple[np.ndarray, dict[int, str]]:
        """`predict_images` with untrustworthy rows returned (see `predict_inputs_checked`)."""
        out = self.run_images(images)
        return out.probs, out.problems

    def run_images(self, images: list[np.ndarray]) -> BatchOutput:
        """`predict_images_checked` with the features and inputs kept (see `run_inputs`)."""
        if self.metadata.kind != "image":
            raise UserError("this model classifies signal windows, not images")
        return self.run_inputs(self.transform(images).numpy())

    def predict_windows(self, windows: np.ndarray, *, normalised: bool = False) -> np.ndarray:
        """Raw windows (N, L) or (N, C, L) of the model's length -> probabilities (N, n_classes).

        For a model trained with per-recording normalisation the windows of one call are z-scored
        together as one recording, unless `normalised` says the caller already did it.

        Raises:
            RequestError: a window turns into non-finite values on the way (z-score, transform,
                network): an unusable input never gets a verdict.
        """
        return _raise_problems(*self.predict_windows_checked(windows, normalised=normalised))

    def predict_windows_checked(
        self, windows: np.ndarray, *, normalised: bool = False
    ) -> tuple[np.ndarray, dict[int, str]]:
        """`predict_windows` with untrustworthy rows returned (see `predict_inputs_checked`)."""
        out = self.run_windows(windows, normalised=normalised)
        return out.probs, out.problems

    def run_windows(self, windows: np.ndarray, *, normalised: bool = False) -> BatchOutput:
        """`predict_windows_checked` with the features and inputs kept (see `run_inputs`)."""
        if self.metadata.kind != "signal":
            raise UserError("this model classifies images, not signal windows")
        windows = np.asarray(windows, dtype=np.float32)
        if windows.shape[-1] != self.window_length:
            raise UserError(
                f"windows have {windows.shape[-1]} samples; this model expects {self.window_length}"
            )
        problems: dict[int, str] = {}
        if (
            self.metadata.transform.get("signal_norm") == "recording" and not normalised
        ):  # one call = one recording
            windows = windows if windows.ndim == 3 else windows[:, None, :]
            n, c = len(windows), windows.shape[1]
            joined = zscore(windows.transpose(1, 0, 2).reshape(c, -1))
            windows = joined.reshape(c, n, -1).transpose(1, 0, 2)
            problems = _non_finite_rows(windows, "z-scoring the recording")
        if self.takes_signal:
            out = self._run_signal(windows)
        else:
            try:
                inputs = self.transform(windows).numpy()
            except ValueError as exc:
                raise UserError(f"cannot turn the windows into images: {exc}") from None
            out = self.run_inputs(inputs)
        for row, reason in out.problems.items():
            problems.setdefault(row, reason)
        out.probs[list(problems)] = np.nan
        return BatchOutput(out.probs, problems, out.features, out.inputs)

    def _run_signal(self, windows: np.ndarray) -> BatchOutput:
        """The raw-signal model on windows (N, L) or (N, C, L) of its channels."""
        x = windows if windows.ndim == 3 else windows[:, None, :]
        want = len(self.metadata.channels)
        if x.ndim != 3 or x.shape[1] != want:
            raise UserError(
                f"windows must be (N, {want}, {self.window_length}) for this model, got {windows.shape}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        probs, problems, outputs = self._run_checked(x, "the window")
        features = None if self.features_index is None else outputs[self.features_index]
        profile = None if self.profile_index is None else outputs[self.profile_index]
        return BatchOutput(probs, problems, features, profile)

    def signal_windows(
        self, signal: np.ndarray, fs: float | None = None, *, resample: bool = False, names: Any = None
    ) -> np.ndarray:
        """A whole signal -> the model's windows (see `deploy.signal_request.prepare_signal`)."""
        return prepare_signal(self.metadata, signal, fs, resample_rate=resample, names=names)

    def predict_signal(
        self, signal: np.ndarray, fs: float | None = None, *, names: Any = None
    ) -> SignalPrediction:
        """A whole signal (channels, samples) cut into the model's windows; verdict from the mean probability.

        Raises:
            RequestError: the signal has other channels, another rate, or is shorter than a window.
        """
        probs = self.predict_windows(self.signal_windows(signal, fs, names=names), normalised=True)
        return self.verdict(probs)

    def verdict(self, probs: np.ndarray) -> SignalPrediction:
        """The windows' probabilities (N, n_classes) -> the signal's verdict."""
        mean = probs.mean(axis=0)
        return SignalPrediction(
            label=self.classes[int(mean.argmax())],
            probabilities=probabilities(self.classes, mean),
            window_labels=[self.classes[i] for i in probs.argmax(axis=1)],
        )


def _non_finite_rows(values: np.ndarray, stage: str) -> dict[int, str]:
    """{row: reason} for the rows of `values` holding NaN or Inf."""
    if values.size == 0:
        return {}
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return {
        int(row): (
            f"non-finite values in {stage}: the input cannot be scaled in float32 arithmetic "
            "(an amplitude near the float32 limit, or a constant-overflow); check the sensor's "
            "scaling and send values in physical units"
        )
        for row in np.flatnonzero(bad)
    }


def _raise_problems(probs: np.ndarray, problems: dict[int, str]) -> np.ndarray:
    if problems:
        row, reason = next(iter(sorted(problems.items())))
        where = f"window {row}" if len(probs) > 1 else "the input"
        raise RequestError(
            "data", f"{where}: {reason}" + (f" ({len(problems)} rows in all)" if len(problems) > 1 else "")
        )
    return probs


def _softmax(logits: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are reported, not warned
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


__all__ = [
    "BatchOutput",
    "OnnxInferencer",
    "RequestError",
    "SignalPrediction",
    "choose_providers",
    "create_session",
]
