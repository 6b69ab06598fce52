"""Defect-image ingest: decoding, folders and manifests, corrupt files, group splits, imbalance."""

from __future__ import annotations

import csv
import json

import cv2
import mlflow
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.augment import make_augment
from pipeline.config import AugmentConfig, SplitConfig, load_config
from pipeline.data import prepare_data
from pipeline.errors import ConfigError, UserError
from pipeline.ingest.images import decode_image, read_image_folder, read_image_manifest
from pipeline.ingest.split import LeakageError, Split, assert_disjoint, split_given, split_units
from pipeline.metrics import per_class_metrics
from pipeline.train import batches
from signal2image import ImageTransform, from_dict, imageio
from tests.conftest import run_cli, write_config


def _picture(label: str, i: int, size=(40, 30)) -> np.ndarray:
    """A textured 'part'; defects add a dark blob or a bright scratch."""
    rng = np.random.default_rng(i)
    h, w = size[1], size[0]
    img = 0.5 + 0.1 * rng.standard_normal((h, w))
    if label == "blob":
        img[h // 3 : h // 3 + 8, w // 3 : w // 3 + 8] = 0.05
    elif label == "scratch":
        img[:, w // 2 : w // 2 + 2] = 0.95
    return np.clip(img, 0, 1)


def make_image_folder(root, labels=("ok", "blob", "scratch"), per_class=8):
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            arr = (_picture(label, i) * 255).astype(np.uint8)
            img = Image.fromarray(arr)
            if i % 2:
                img = img.convert("RGB")  # mixed grey and colour containers
            img.save(root / label / f"{i}.png" if i % 3 else root / label / f"{i}.jpg")
    return root


def test_decode_scales_by_bit_depth_and_honours_exif(tmp_path):
    grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    got = decode_image(tmp_path / "g16.png")
    assert got.shape == (3, 4) and np.allclose(got, grey16 / 65535.0)
    Image.fromarray(np.full((3, 4), 255, np.uint8)).save(tmp_path / "g8.png")
    assert decode_image(tmp_path / "g8.png").max() == 1.0
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert decode_image(tmp_path / "c.png").shape == (5, 7, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the camera stored it sideways
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    assert decode_image(tmp_path / "rot.jpg").shape == (7, 5, 3)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert np.allclose(decode_image(tmp_path / "clear.png"), 1.0)  # transparent -> white background
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError):
        decode_image(tmp_path / "bad.png")
    with pytest.raises(ValueError):
        decode_image(b"hello")


def _no_pillow(monkeypatch):
    """Make the Pillow fallback fail loudly: what follows must be OpenCV's decoding."""

    def refuse(data):
        raise AssertionError("decoded by Pillow, not OpenCV")

    monkeypatch.setattr(imageio, "_decode_pillow", refuse)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_opencv_applies_exif_orientation(tmp_path, monkeypatch, orientation):
    _no_pillow(monkeypatch)
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8, :, 0] = 255  # red top half, green left third: every rotation and flip differs
    stored[:, :8, 1] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif, quality=95)
    data = (tmp_path / "o.jpg").read_bytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (16, 24, 3)
    shown = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}[orientation]
    got = decode_image(tmp_path / "o.jpg")
    assert got.shape == shown.shape and np.abs(got - shown / 255.0).mean() < 0.02
    with Image.open(tmp_path / "o.jpg") as img:  # Pillow's reading, as before OpenCV
        assert np.allclose(got, np.asarray(ImageOps.exif_transpose(img)) / 255.0, atol=2 / 255)


def test_opencv_16_bit_grey_png_is_exact_and_grey_round_trips(tmp_path, monkeypatch):
    _no_pillow(monkeypatch)
    grey16 = np.random.default_rng(0).integers(0, 65536, (37, 53), dtype=np.uint16)
    grey16[0, :2] = (0, 65535)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    got = decode_image(tmp_path / "g16.png")
    assert got.dtype == np.float32 and got.shape == (37, 53)
    assert np.array_equal(got, grey16.astype(np.float32) / np.float32(65535))
    grey8 = np.random.default_rng(1).integers(0, 256, (29, 31), dtype=np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey8).convert("RGB").save(tmp_path / "g8rgb.png")  # grey in a colour container
    for name in ("g8.png", "g8rgb.png"):
        got = decode_image(tmp_path / name)
        assert got.shape == (29, 31) and np.array_equal(np.round(got * 255).astype(np.uint8), grey8)
        Image.fromarray(np.round(got * 255).astype(np.uint8)).save(tmp_path / "again.png")
        assert np.array_equal(decode_image(tmp_path / "again.png"), got)


def test_opencv_colour_png_alpha_over_white_and_truncated_png(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with monkeypatch.context() as m:
        _no_pillow(m)
        got = decode_image(tmp_path / "a.png")
    alpha = rgba[..., 3:] / 255.0
    assert got.shape == (20, 30, 3)
    assert np.allclose(got, rgba[..., :3] / 255.0 * alpha + (1 - alpha), atol=1e-6)
    assert np.allclose(got[0, 0], 1.0) and np.allclose(got[0, 1], rgba[0, 1, :3] / 255.0)
    # TIFF with alpha goes to Pillow (libtiff's RGBA reader premultiplies): the same composite.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.tif")
    assert np.allclose(decode_image(tmp_path / "a.tif"), got, atol=1 / 255)
    whole = (tmp_path / "a.png").read_bytes()
    for cut in (60, len(whole) // 2, len(whole) - 40):  # into the pixel data
        with pytest.raises(ValueError, match="truncated"):
            decode_image(whole[:cut])
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"GIF89a but not really")


@pytest.mark.parametrize("shape", [(200, 150, 3), (97, 131)])
def test_shrinking_equals_opencv_inter_area(shape):
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    got = ImageTransform(image_size=64, policy="resize").fit_size(image).numpy()
    want = np.clip(cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA), 0, 1)
    want = want.transpose(2, 0, 1) if want.ndim == 3 else np.broadcast_to(want, (3, 64, 64))
    assert np.array_equal(got, want)
    # One axis shrinks, the other grows: area-averaged along the shrinking one (no aliasing).
    stripes = np.zeros((100, 10), np.float32)
    stripes[::2] = 1
    assert np.allclose(ImageTransform(image_size=20).fit_size(stripes)[0].numpy(), 0.5, atol=0.1)


@pytest.mark.parametrize("policy", ["resize", "center_crop", "pad"])
def test_image_transform_policies(policy):
    t = ImageTransform(image_size=16, policy=policy)
    wide = np.zeros((10, 30), np.float32)
    wide[:, :15] = 1.0
    out = t([wide, np.random.default_rng(0).random((20, 20, 3)).astype(np.float32)])
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert torch.equal(out[0, 0], out[0, 1])  # grey replicated
    if policy == "pad":  # aspect kept: rows above and below are padding (the mean)
        assert torch.allclose(out[0, 0, 0], torch.full((16,), 0.0))
    assert from_dict(t.to_dict()).to_dict() == t.to_dict()


def test_folder_and_manifest_ingest_with_group_split(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    ingest = read_image_folder(root)
    assert len(ingest.samples) == 24 and {s.label for s in ingest.samples} == {"ok", "blob", "scratch"}
    # Manifest: two images per board; a board never spans two splits.
    with open(tmp_path / "m.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        for s in ingest.samples:
            writer.writerow(
                [str(s.path.relative_to(tmp_path)), s.label, f"{s.label}-board{int(s.path.stem) // 2}"]
            )
    samples = read_image_manifest(tmp_path / "m.csv").samples
    split = split_units(
        samples, SplitConfig(train=0.5, val=0.25, test=0.25), unit=lambda s: s.group, noun="part"
    )
    groups = {name: {s.group for s in items} for name, items in split.parts().items()}
    assert (
        not groups["train"] & groups["test"]
        and not groups["train"] & groups["val"]
        and not groups["val"] & groups["test"]
    )
    assert sum(len(v) for v in split.parts().values()) == 24
    for items in split.parts().values():
        assert {s.label for s in items} == {"ok", "blob", "scratch"}
    with pytest.raises(LeakageError):
        assert_disjoint(Split(train=(samples[0],), val=(), test=(samples[1],)), unit=lambda s: "same-board")


def test_ingest_errors_name_the_class_or_column(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=2)
    (root / "empty").mkdir()
    with pytest.raises(UserError, match="class 'empty'"):
        read_image_folder(root)
    (root / "empty").rmdir()
    samples = read_image_folder(root).samples
    with pytest.raises(UserError, match="class 'blob' has 2 part"):
        split_units(samples, SplitConfig(), unit=lambda s: s.id, noun="part")
    (tmp_path / "bad.csv").write_text("file,class\na.png,ok\n")
    with pytest.raises(UserError, match=r"missing column\(s\) \['path', 'label'\]"):
        read_image_manifest(tmp_path / "bad.csv")
    rows = [
        ("imgs/ok/0.jpg", "ok", "train"),
        ("imgs/blob/0.jpg", "blob", "train"),
        ("imgs/scratch/0.jpg", "scratch", "test"),
        ("imgs/ok/1.png", "ok", "val"),
    ]
    (tmp_path / "s.csv").write_text("path,label,split\n" + "\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(UserError, match=r"labels \['scratch'\] are in the test split but not in train"):
        split_given(read_image_manifest(tmp_path / "s.csv").samples, unit=lambda s: s.group)
    (tmp_path / "bom.csv").write_bytes(
        "\ufeffpath,label\nimgs/ok/0.jpg,ok\nimgs/blob/0.jpg,blob\n".encode("utf-8")
    )
    assert len(read_image_manifest(tmp_path / "bom.csv").samples) == 2  # Excel's UTF-8 CSV
    (tmp_path / "latin.csv").write_bytes("path,label\nimgs/ok/0.jpg,d\xe9faut\n".encode("cp1252"))
    with pytest.raises(UserError, match="save the manifest as UTF-8"):
        read_image_manifest(tmp_path / "latin.csv")
    assert issubclass(LeakageError, UserError)
    with pytest.raises(ConfigError, match="exactly one of data.images.path"):
        load_config(None, ["data.source=images", "transform.kind=image", "data.images={}"])
    with pytest.raises(ConfigError, match="needs transform.kind 'image'"):
        load_config(None, ["data.source=elpv"])


def test_weighted_sampler_balances_classes_and_augment_keeps_pixels():
    y = torch.tensor([0] * 90 + [1] * 10)
    counts = torch.bincount(y).float()
    weights = (len(y) / (2 * counts))[y]
    drawn = torch.cat(list(batches(len(y), 25, torch.Generator().manual_seed(0), weights)))
    assert len(drawn) == 100
    share = (y[drawn] == 1).float().mean().item()
    assert 0.35 < share < 0.65  # 10 % of the data, about half of the draws
    assert make_augment(AugmentConfig(), 0.5) is None
    aug = make_augment(AugmentConfig(hflip=True, vflip=True, rot90=True), 0.5)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = aug(x, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)


def test_per_class_metrics():
    m = per_class_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["ok", "open/short"])
    assert m == {
        "precision_ok": 1.0,
        "recall_ok": 0.5,
        "precision_open/short": pytest.approx(2 / 3),
        "recall_open/short": 1.0,
    }


def parts_job(root, *, policy: str, model: dict | None = None, **train) -> dict:
    """The tiny image job on `make_image_folder`'s parts: 32 px, one epoch; `train` keys added."""
    return {
        "name": "parts",
        "data": {
            "source": "images",
            "images": {"path": str(root)},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        },
        "transform": {"kind": "image", "image_size": 32, "policy": policy},
        **({"model": model} if model else {}),
        "train": {"epochs": 1, "batch_size": 8, "num_threads": 2, **train},
        "tracking": {"experiment": "parts", "registered_model": "parts-defect"},
    }


def test_image_job_end_to_end_with_a_corrupt_file(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "blob" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    job = parts_job(
        root,
        policy="pad",
        class_weighting="sampler",
        augment={"hflip": True, "rot90": True, "brightness": 0.05},
    )
    cfg_path = write_config(tmp_path / "parts.yaml", job)
    data = prepare_data(load_config(cfg_path), echo=lambda s: None)
    assert data.skipped_files and data.skipped_files[0][0].endswith("broken.png")
    assert data.report()["skipped_files"]["count"] == 1
    proc = run_cli("run", str(cfg_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 unreadable image(s) skipped" in proc.stdout and "broken.png" in proc.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics["skipped_files"] == 1
    child = next(r for r in runs if r.data.tags.get("strategy") == "finetune")
    assert {"test_precision_blob", "test_recall_scratch", "test_balanced_accuracy"} <= set(child.data.metrics)
    Image.fromarray((_picture("blob", 99) * 255).astype(np.uint8)).save(tmp_path / "new.png")
    pred = run_cli("predict", "--model", "models:/parts-defect@champion", "new.png", "--json", cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr
    out = json.loads(pred.stdout)
    assert out["label"] in ("ok", "blob", "scratch") and abs(sum(out["probabilities"].values()) - 1) < 1e-5
    bad = run_cli(
        "predict", "--model", "models:/parts-defect@champion", str(root / "blob" / "broken.png"), cwd=tmp_path
    )
    assert bad.returncode == 2 and "not a readable image" in bad.stderr


@pytest.mark.parametrize("policy", ["resize", "center_crop", "pad"])
def test_a_batch_resizes_like_each_image_alone(policy):
    rng = np.random.default_rng(5)
    images = [rng.random((90, 70, 3)).astype(np.float32), rng.random((90, 70)).astype(np.float32)]
    images += [rng.random((50, 120)).astype(np.float32), images[0] * 0.5]
    t = ImageTransform(image_size=32, policy=policy)
    together = t.fit_sizes(images).numpy()
    for i, image in enumerate(images):
        assert np.allclose(together[i], t.fit_size(image).numpy(), rtol=0, atol=1e-6)
