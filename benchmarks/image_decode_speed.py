"""Decode + resize of one image to the network input: Pillow + torch (before) vs OpenCV (now).

"before" is the code this project used until OpenCV, re-implemented here: Pillow's `Image.open`,
EXIF transpose and conversion to float [0, 1], then torch's bilinear `F.interpolate` with
antialias to 64 x 64. "now" is `signal2image.imageio.decode_image` and
`ImageTransform(image_size=64).fit_size`. Inputs: a 128 x 128 grey PNG (what
`benchmarks/load_service.py` sends) and a 1024 x 1024 colour JPEG. Rounds alternate between the
two; each round times --repeat calls; reported: median time per image of each, and the median of
the per-round ratios (before / now).

    python benchmarks/image_decode_speed.py [--rounds 9] [--repeat 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from signal2image import ImageTransform  # noqa: E402
from signal2image.imageio import decode_image  # noqa: E402

SIZE = 64


def old_decode(data: bytes) -> np.ndarray:
    """The former `pipeline.ingest.images.decode_image` (8-bit grey and colour paths)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("1", "L", "LA"):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., 0]
        return rgb


def old_fit_size(image: np.ndarray) -> torch.Tensor:
    """The former `ImageTransform.fit_size` with policy `resize`: bilinear with antialias."""
    arr = image[:, :, None] if image.ndim == 2 else image
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x.expand(-1, 3, -1, -1)[0] if x.shape[1] == 1 else x[0]


def inputs() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    png = io.BytesIO()
    Image.fromarray((rng.random((128, 128)) * 255).astype(np.uint8)).save(png, format="PNG")
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    photo = np.stack([yy, xx, 0.5 + 0.5 * np.sin(20 * (xx + yy))], axis=-1)  # smooth, like a photo
    photo = np.clip(photo + 0.03 * rng.standard_normal(photo.shape), 0, 1)
    jpg = io.BytesIO()
    Image.fromarray((photo * 255).astype(np.uint8)).save(jpg, format="JPEG", quality=90)
    return {"128 x 128 grey PNG": png.getvalue(), "1024 x 1024 colour JPEG": jpg.getvalue()}


def timed(fn, data: bytes, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(data)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=50, help="calls per round and input (1024 px: / 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    args = parser.parse_args()
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    transform = ImageTransform(image_size=SIZE)
    paths = {
        "before": lambda data: old_fit_size(old_decode(data)),
        "now": lambda data: transform.fit_size(decode_image(data)),
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.threads} thread(s); OpenCV {cv2.__version__}, Pillow {Image.__version__}, "
        f"torch {torch.__version__}"
    )
    print(
        f"| input | before (Pillow + torch) | now (OpenCV) | before / now (median of {args.rounds} rounds) |"
    )
    print("|---|---|---|---|")
    for name, data in inputs().items():
        repeat = max(1, args.repeat // 10) if len(data) > 100_000 else args.repeat
        got = {k: fn(data) for k, fn in paths.items()}  # warm; and the two must agree
        diff = float((got["before"] - got["now"]).abs().max())
        times: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for k in order:
                times[k].append(timed(paths[k], data, repeat))
        ratio = statistics.median(b / n for b, n in zip(times["before"], times["now"]))
        before, now = (statistics.median(times[k]) * 1e3 for k in ("before", "now"))
        print(f"| {name} | {before:.3f} ms | {now:.3f} ms | **{ratio:.2f}x** (max abs diff {diff:.3f}) |")


if __name__ == "__main__":
    main()
