"""The model metadata: the one contract between the export and every consumer of a model.

An exported .onnx file carries a `ModelMetadata` as ONNX metadata properties (one JSON value per
top-level key, readable by any ONNX tool). The job's export stage writes it; the inferencer, the
service, the INT8/FP16 variants, the Triton repository and the CLI read it back with
`ModelMetadata.from_onnx`. Nobody else parses the properties.

Versions: `METADATA_VERSION` is written as the property ``metadata_version``. Files exported before
the property existed hold the same keys and are read as version 1; a file from a newer version of
this project is refused with a message instead of being half understood.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signal2image.errors import UserError

METADATA_VERSION = 1


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


@dataclass(frozen=True)
class Variant:
    """A derived model: ``int8`` (with its number of calibration inputs) or ``fp16``."""

    kind: str
    calibration_inputs: int | None = None


@dataclass(frozen=True)
class ModelMetadata:
    """What a consumer needs to run an exported model exactly as it was trained.

    Attributes:
        classes: class names, in the order of the network's outputs.
        transform: the signal-to-image (or image) transform's `to_dict()`; `signal2image.from_dict`
            rebuilds it.
        input_shape: the network input, ``["batch", C, H, W]``.
        mean, std: the per-channel normalisation inside the transform (also in `transform`).
        window_length, window_hop: signal models: the window in samples (None for image models).
        fs: signal models: the sample rate in Hz.
        channels: signal models: which channels of a file the model reads (indices or names).
        file_channels: signal models: how many channels the training files had (None: unknown
            or mixed); a wider request is read by index only when it has as many.
        model: provenance (registry name and version, strategy, runs, data hash).
        metrics: test metrics of the exported trial.
        variant: set on INT8/FP16 variants.
        version: the metadata format version.
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
    version: int = METADATA_VERSION

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
        if not self.is_image:
            out["window"] = {"length": self.window_length, "hop": self.window_hop}
            out["fs"] = self.fs
            out["channels"] = list(self.channels)
            out["file_channels"] = self.file_channels
        if self.variant is not None:
            out["variant"] = {k: v for k, v in dataclasses.asdict(self.variant).items() if v is not None}
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
            meta = cls(
                classes=tuple(str(c) for c in doc["classes"]),
                transform=transform,
                input_shape=tuple(doc.get("input_shape") or ()),
                mean=tuple(float(v) for v in norm.get("mean", transform.get("mean", ()))),
                std=tuple(float(v) for v in norm.get("std", transform.get("std", ()))),
                model=ModelInfo(**_known(ModelInfo, doc.get("model") or {})),
                metrics={str(k): float(v) for k, v in (doc.get("metrics") or {}).items()},
                variant=Variant(**_known(Variant, doc["variant"])) if doc.get("variant") else None,
                version=version,
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


def _known(kind: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are fields of the dataclass `kind` (newer keys are ignored)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in values.items() if k in names}
