"""The model metadata: the one contract between the export and every consumer of a model.

An exported .onnx file carries a `ModelMetadata` as ONNX metadata properties (one JSON value per
top-level key, readable by any ONNX tool). The job's export stage writes it; the inferencer, the
service, the INT8/FP16 variants, the Triton repository and the CLI read it back with
`ModelMetadata.from_onnx`. Nobody else parses the properties.

Versions: the property ``metadata_version`` is the oldest format that describes the file fully.
Files exported before the property existed hold the same keys and are read as version 1; a file
from a newer version of this project is refused with a message instead of being half understood.
Version 2 (`SIGNAL_INPUT_VERSION`) adds ``input_kind``: ``signal`` for a raw-signal model (its
graph takes the windows themselves, ``[batch, channels, samples]``, and computes the transform);
image-input models still say version 1 and keep being read by services of version 1, while a
raw-signal model is refused by them rather than fed images. `METADATA_VERSION` is the newest
version this code reads.

Optional parts carry their own version and may be ignored without misreading the model: the drift
reference (property ``drift_reference``, `DriftReference`, its own ``version``). A file without
it, or with one this code cannot read, still serves; the reason is kept in
`ModelMetadata.drift_note` (the service's ``GET /v1/drift`` says drift is unavailable, and why).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signal2image.errors import UserError

METADATA_VERSION = 2
SIGNAL_INPUT_VERSION = 2  # the first version with `input_kind`
DRIFT_REFERENCE_VERSION = 2  # 2: `groups`, the training recording of each sample
FEATURES_OUTPUT = "features"  # the second ONNX output: PCA-projected penultimate features
PROFILE_OUTPUT = "profile"  # raw-signal models: the network input's mean over channels and columns
INPUT_KINDS = ("image", "signal")


class MetadataError(UserError):
    """The file is not a model exported by this project, or its metadata is incomplete."""


@dataclass(frozen=True)
class ModelInfo:
    """Where the model came from: its registry name and version, and the trial that trained it."""

    name: str = ""
    version: str = ""
    backbone: str = ""
    strategy: str = ""
    seed: int | None = None
    train_fraction: float | None = None
    run_id: str = ""
    strategy_run_id: str = ""
    data_hash: str = ""
    tta: str = "none"  # the test-time views the graph averages (models.VIEWS): none, flips or dihedral
    # train.operating_point in words, when the graph adds a class offset chosen on validation ("": none),
    # and what it adds to the logits, one per class ((): none).
    operating_point: str = ""
    class_offsets: tuple[float, ...] = ()


@dataclass(frozen=True)
class Variant:
    """A derived model: ``int8`` (with its number of calibration inputs) or ``fp16``."""

    kind: str
    calibration_inputs: int | None = None


def encode_array(values: np.ndarray) -> dict[str, Any]:
    """A float array as compact JSON: shape and little-endian float32 bytes in base64."""
    array = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(array.shape), "float32": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(doc: Mapping[str, Any]) -> np.ndarray:
    """`encode_array`'s JSON back to a float32 array (ValueError when the size does not match)."""
    shape = tuple(int(n) for n in doc["shape"])
    array = np.frombuffer(base64.b64decode(doc["float32"]), dtype="<f4").astype(np.float32)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"an array of shape {list(shape)} holds {array.size} values")
    return array.reshape(shape)


@dataclass(frozen=True, eq=False)
class DriftReference:
    """What the service's drift watch compares recent requests with: a sample of the training data.

    Attributes:
        features: (n, k) the network's ``features`` output (penultimate features projected by the
            PCA that is part of the graph) of a seeded sample of training inputs.
        bands: (n, B) the same samples' band energies: the network input's mean over channels and
            time in each band of image rows (`band_rows`).
        band_rows: B + 1 row boundaries of the bands in the network input (row 0: the lowest
            frequency of a time-frequency image; the top row of a defect image).
        band_edges: B + 1 edges of the bands in `band_unit` (``Hz`` from the transform's
            frequencies, ``row`` for defect images).
        band_mean, band_std: each band's mean and std over all the training inputs summarised.
        conditions: (n, len(condition_names)) each sample's operating condition (NaN where unknown),
            or None when the training data had none.
        condition_names: the condition of each column (``rpm``, ``load``).
        condition_range: per condition, the [min, max] over the whole training split.
        raw_dim: width of the penultimate features before the projection.
        explained_variance: fraction of the training features' variance the projection keeps.
        n_summarised: training inputs the projection and the band statistics were fitted on.
        seed: seed of the sample.
        groups: (n,) the training recording (numbered 0..R-1) each sample comes from, or None (a
            version 1 reference, or images): the drift watch leaves a sample's own recording out
            when it predicts the sample from its condition (`deploy.drift`).
        version: the reference's format version.
    """

    features: np.ndarray
    bands: np.ndarray
    band_rows: tuple[int, ...]
    band_edges: tuple[float, ...]
    band_unit: str
    band_mean: tuple[float, ...]
    band_std: tuple[float, ...]
    conditions: np.ndarray | None = None
    condition_names: tuple[str, ...] = ()
    condition_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    raw_dim: int = 0
    explained_variance: float = 0.0
    n_summarised: int = 0
    seed: int = 0
    groups: np.ndarray | None = None
    version: int = DRIFT_REFERENCE_VERSION

    @property
    def size(self) -> int:
        return int(len(self.features))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "output": FEATURES_OUTPUT,
            "features": encode_array(self.features),
            "bands": encode_array(self.bands),
            "band_rows": list(self.band_rows),
            "band_edges": [round(float(e), 3) for e in self.band_edges],
            "band_unit": self.band_unit,
            "band_mean": [float(v) for v in self.band_mean],
            "band_std": [float(v) for v in self.band_std],
            "raw_dim": self.raw_dim,
            "explained_variance": float(self.explained_variance),
            "n_summarised": self.n_summarised,
            "seed": self.seed,
        }
        if self.conditions is not None:
            out["conditions"] = encode_array(self.conditions)
            out["condition_names"] = list(self.condition_names)
            out["condition_range"] = {k: [float(a), float(b)] for k, (a, b) in self.condition_range.items()}
        if self.groups is not None:
            out["groups"] = [int(g) for g in self.groups]
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DriftReference) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def summary(self) -> dict[str, Any]:
        """The reference without its arrays (for ``GET /v1/model``)."""
        doc = self.to_json()
        for key in ("features", "bands", "conditions", "groups"):
            doc.pop(key, None)
        doc["samples"] = self.size
        doc["dims"] = int(self.features.shape[1]) if self.features.ndim == 2 else 0
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DriftReference:
        """Parse `to_json`'s object.

        Raises:
            MetadataError: a newer format, or a missing or malformed entry.
        """
        version = int(doc.get("version", 1))
        if version > DRIFT_REFERENCE_VERSION:
            raise MetadataError(
                f"its drift reference has format version {version}, newer than this service's "
                f"{DRIFT_REFERENCE_VERSION}; upgrade fault-pipeline to watch drift with it"
            )
        try:
            features = decode_array(doc["features"])
            bands = decode_array(doc["bands"])
            conditions = decode_array(doc["conditions"]) if doc.get("conditions") else None
            names = tuple(str(n) for n in doc.get("condition_names", ()))
            ref = cls(
                features=features,
                bands=bands,
                band_rows=tuple(int(r) for r in doc["band_rows"]),
                band_edges=tuple(float(e) for e in doc["band_edges"]),
                band_unit=str(doc.get("band_unit", "Hz")),
                band_mean=tuple(float(v) for v in doc["band_mean"]),
                band_std=tuple(float(v) for v in doc["band_std"]),
                conditions=conditions,
                condition_names=names if conditions is not None else (),
                condition_range={
                    str(k): (float(v[0]), float(v[1])) for k, v in (doc.get("condition_range") or {}).items()
                },
                raw_dim=int(doc.get("raw_dim", 0)),
                explained_variance=float(doc.get("explained_variance", 0.0)),
                n_summarised=int(doc.get("n_summarised", 0)),
                seed=int(doc.get("seed", 0)),
                groups=np.asarray(doc["groups"], dtype=np.int64) if doc.get("groups") else None,
                version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise MetadataError(f"its drift reference is malformed ({type(exc).__name__}: {exc})") from None
        n, bands_n = len(ref.features), len(ref.band_rows) - 1
        if (
            ref.features.ndim != 2
            or ref.bands.shape != (n, bands_n)
            or len(ref.band_edges) != bands_n + 1
            or len(ref.band_mean) != bands_n
            or len(ref.band_std) != bands_n
            or (conditions is not None and conditions.shape != (n, len(names)))
            or (ref.groups is not None and ref.groups.shape != (n,))
        ):
            raise MetadataError("its drift reference is malformed (arrays of inconsistent shapes)")
        return ref


@dataclass(frozen=True)
class ModelMetadata:
    """What a consumer needs to run an exported model exactly as it was trained.

    Attributes:
        classes: class names, in the order of the network's outputs.
        transform: the signal-to-image (or image) transform's `to_dict()`; `signal2image.from_dict`
            rebuilds it.
        input_shape: the graph's input: ``["batch", C, H, W]`` (the network input), or for a
            raw-signal model ``["batch", channels, window_length]``.
        mean, std: the per-channel normalisation inside the transform (also in `transform`).
        window_length, window_hop: signal models: the window in samples (None for image models).
        fs: signal models: the sample rate in Hz.
        channels: signal models: which channels of a file the model reads (indices or names).
        file_channels: signal models: how many channels the training files had (None: unknown
            or mixed); a wider request is read by index only when it has as many.
        model: provenance (registry name and version, strategy, runs, data hash).
        metrics: test metrics of the exported trial.
        variant: set on INT8/FP16 variants.
        drift: the training-data reference of the drift watch (None: exported without one).
        drift_note: why there is no usable drift reference (empty when there is one).
        input_kind: ``image``: the graph takes network inputs (the transform runs before it);
            ``signal``: a raw-signal model, the graph takes the windows and computes `transform`.
        version: the metadata format version (`SIGNAL_INPUT_VERSION` for a raw-signal model).
    """

    classes: tuple[str, ...]
    transform: Mapping[str, Any]
    input_shape: tuple[Any, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    window_length: int | None = None
    window_hop: int | None = None
    fs: float | None = None
    channels: tuple[int | str, ...] = (0,)
    file_channels: int | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    metrics: Mapping[str, float] = field(default_factory=dict)
    variant: Variant | None = None
    drift: DriftReference | None = None
    drift_note: str = ""
    input_kind: str = "image"
    version: int = 1

    @property
    def takes_signal(self) -> bool:
        """True for a raw-signal model: the ONNX graph takes windows and computes the transform."""
        return self.input_kind == "signal"

    @property
    def image_shape(self) -> tuple[Any, ...]:
        """The network input ``("batch", C, S, S)``, whichever input the graph takes."""
        size = int(self.transform["image_size"])
        return ("batch", int(self.transform.get("channels", 3)), size, size)

    def as_signal_input(self) -> ModelMetadata:
        """The metadata of the raw-signal model of this (image-input) signal model.

        Raises:
            ValueError: an image model, or a signal model without its window.
        """
        if self.is_image or self.window_length is None:
            raise ValueError("only a signal model with its window has a raw-signal model")
        return dataclasses.replace(
            self,
            input_kind="signal",
            input_shape=("batch", len(self.channels), self.window_length),
            version=max(self.version, SIGNAL_INPUT_VERSION),
        )

    @property
    def is_image(self) -> bool:
        """True for a defect-image model, False for a signal model."""
        return self.transform.get("kind") == "image"

    @property
    def kind(self) -> str:
        return "image" if self.is_image else "signal"

    @classmethod
    def for_transform(
        cls,
        classes: Sequence[str],
        transform: Any,
        *,
        window: tuple[int, int] | None = None,
        channels: Sequence[int | str] = (0,),
        file_channels: int | None = None,
        model: ModelInfo | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelMetadata:
        """The metadata of a model fed by `transform` (a `signal2image` transform object).

        Args:
            window: signal models: (length, hop) in samples.
            channels: signal models: the channels of a file the model reads.
        """
        spec = transform.to_dict()
        size = int(spec["image_size"])
        is_image = spec.get("kind") == "image"
        if not is_image and window is None:
            raise ValueError("a signal model needs its window: for_transform(..., window=(length, hop))")
        return cls(
            classes=tuple(classes),
            transform=spec,
            input_shape=("batch", int(spec.get("channels", 3)), size, size),
            mean=tuple(float(v) for v in transform.mean),
            std=tuple(float(v) for v in transform.std),
            window_length=None if is_image or window is None else int(window[0]),
            window_hop=None if is_image or window is None else int(window[1]),
            fs=None if is_image else float(spec["fs"]),
            channels=tuple(channels),
            file_channels=None if is_image else file_channels,
            model=model or ModelInfo(),
            metrics=dict(metrics or {}),
        )

    def with_variant(self, kind: str, calibration_inputs: int | None = None) -> ModelMetadata:
        """The same metadata marked as a derived variant."""
        return dataclasses.replace(self, variant=Variant(kind, calibration_inputs))

    def with_drift(self, reference: DriftReference | None) -> ModelMetadata:
        """The same metadata with `reference` as its drift reference (None removes it)."""
        return dataclasses.replace(self, drift=reference, drift_note="")

    def to_json(self) -> dict[str, Any]:
        """The metadata as one JSON object, keyed like the ONNX properties."""
        out: dict[str, Any] = {
            "metadata_version": self.version,
            "classes": list(self.classes),
            "transform": dict(self.transform),
            "input_shape": list(self.input_shape),
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "model": dataclasses.asdict(self.model),
            "metrics": dict(self.metrics),
        }
        if self.takes_signal:
            out["input_kind"] = self.input_kind
        if not self.is_image:
            out["window"] = {"length": self.window_length, "hop": self.window_hop}
            out["fs"] = self.fs
            out["channels"] = list(self.channels)
            out["file_channels"] = self.file_channels
        if self.variant is not None:
            out["variant"] = {k: v for k, v in dataclasses.asdict(self.variant).items() if v is not None}
        if self.drift is not None:
            out["drift_reference"] = self.drift.to_json()
        return out

    def to_onnx_props(self) -> dict[str, str]:
        """ONNX metadata properties: one JSON value per top-level key."""
        return {key: json.dumps(value) for key, value in self.to_json().items()}

    def write_into(self, proto: Any) -> None:
        """Replace the metadata properties of an `onnx.ModelProto` with these."""
        del proto.metadata_props[:]
        for key, value in self.to_onnx_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, where: str = "the model") -> ModelMetadata:
        """Parse the JSON object of `to_json` (or of an older export with the same keys).

        Raises:
            MetadataError: a key is missing or malformed, or the format is newer than this code.
        """
        try:
            version = int(doc.get("metadata_version", 1))
            if version > METADATA_VERSION:
                raise MetadataError(
                    f"{where} has metadata version {version}, newer than this pipeline's {METADATA_VERSION}; "
                    "upgrade fault-pipeline to read it"
                )
            transform = dict(doc["transform"])
            norm: Mapping[str, Any] = doc.get("normalisation") or {}
            input_kind = str(doc.get("input_kind", "image"))
            if input_kind not in INPUT_KINDS:
                raise MetadataError(
                    f"{where} has input_kind {input_kind!r}; this pipeline reads {list(INPUT_KINDS)}"
                )
            meta = cls(
                classes=tuple(str(c) for c in doc["classes"]),
                transform=transform,
                input_shape=tuple(doc.get("input_shape") or ()),
                mean=tuple(float(v) for v in norm.get("mean", transform.get("mean", ()))),
                std=tuple(float(v) for v in norm.get("std", transform.get("std", ()))),
                model=model_info(doc.get("model") or {}),
                metrics={str(k): float(v) for k, v in (doc.get("metrics") or {}).items()},
                variant=Variant(**_known(Variant, doc["variant"])) if doc.get("variant") else None,
                input_kind=input_kind,
                version=version,
            )
            if doc.get("drift_reference"):
                try:
                    meta = dataclasses.replace(meta, drift=DriftReference.from_json(doc["drift_reference"]))
                except MetadataError as exc:  # the model still serves; the drift watch says why not
                    meta = dataclasses.replace(meta, drift_note=f"{where}: {exc}")
            else:
                meta = dataclasses.replace(
                    meta, drift_note=f"{where} was exported without a drift reference (an older export)"
                )
            if meta.is_image:
                return meta
            window = doc["window"]
            channels = doc.get("channels", [doc.get("channel", 0)])  # "channel": the first exports
            return dataclasses.replace(
                meta,
                window_length=int(window["length"]),
                window_hop=int(window["hop"]),
                fs=float(doc.get("fs") or transform["fs"]),
                channels=tuple(c if isinstance(c, str) else int(c) for c in channels),
                file_channels=None if doc.get("file_channels") is None else int(doc["file_channels"]),
            )
        except MetadataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetadataError(
                f"{where} lacks this project's metadata ({type(exc).__name__}: {exc}); "
                "export it with `pipeline run` or `pipeline export`"
            ) from None

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, where: str = "the model") -> ModelMetadata:
        """Parse ONNX metadata properties (key -> JSON text)."""
        try:
            doc = {key: json.loads(value) for key, value in props.items()}
        except (json.JSONDecodeError, TypeError) as exc:
            raise MetadataError(f"{where}: a metadata property is not JSON ({exc})") from None
        return cls.from_json(doc, where=where)

    @classmethod
    def from_onnx(cls, source: str | Path | Any) -> ModelMetadata:
        """The metadata of an .onnx file, an `onnx.ModelProto` or an ONNX Runtime session."""
        if isinstance(source, str | Path):
            import onnx

            try:
                proto = onnx.load(str(source), load_external_data=False)
            except Exception as exc:  # onnx raises protobuf's DecodeError and others for a non-model file
                raise MetadataError(f"{source} is not an ONNX model ({type(exc).__name__})") from None
            return cls.from_props({p.key: p.value for p in proto.metadata_props}, where=str(source))
        if hasattr(source, "get_modelmeta"):  # onnxruntime.InferenceSession
            return cls.from_props(source.get_modelmeta().custom_metadata_map)
        return cls.from_props({p.key: p.value for p in source.metadata_props})


def model_info(values: Mapping[str, Any]) -> ModelInfo:
    """`ModelInfo` from its JSON (lists back to tuples, so a round trip is equal)."""
    known = _known(ModelInfo, values)
    if "class_offsets" in known:
        known["class_offsets"] = tuple(float(v) for v in known["class_offsets"] or ())
    return ModelInfo(**known)


def _known(kind: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are fields of the dataclass `kind` (newer keys are ignored)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in values.items() if k in names}
