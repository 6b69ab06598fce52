"""Training-time augmentations on normalised batches (never for evaluation): flips, turns, brightness
and contrast for inspection images; SpecAugment-style masks and a circular time shift for signal images."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.config import AugmentConfig

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def make_augment(cfg: AugmentConfig, std: float) -> Augment | None:
    """A batch augmentation drawing per-sample flips, 90-degree turns, brightness and contrast, or
    (signal images) time and frequency masks and a circular time shift.

    Args:
        cfg: which augmentations, and how strong.
        std: the normalisation's std, to express brightness in units of the [0, 1] image range.

    Returns:
        None when nothing is enabled.
    """
    if not cfg.active:
        return None
    if cfg.signal_active:
        return _signal_augment(cfg)

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.clone()
        n = x.shape[0]

        def coin() -> torch.Tensor:
            return torch.rand(n, generator=gen) < 0.5

        if cfg.hflip:
            m = coin()
            x[m] = x[m].flip(-1)
        if cfg.vflip:
            m = coin()
            x[m] = x[m].flip(-2)
        if cfg.rot90 and x.shape[-1] == x.shape[-2]:
            turns = torch.randint(0, 4, (n,), generator=gen)
            for k in (1, 2, 3):
                m = turns == k
                x[m] = torch.rot90(x[m], k, dims=(-2, -1))
        if cfg.contrast > 0:
            factor = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.contrast
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * factor
        if cfg.brightness > 0:
            x = x + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.brightness / std
        return x

    return augment


def _signal_augment(cfg: AugmentConfig) -> Augment:
    """SpecAugment-style (Park et al. 2019): per sample, `masks` bands of random width up to
    `time_mask` of the columns and `freq_mask` of the rows are set to 0 (the normalised mean), after
    an optional roll along time by a random number of columns."""

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = x.clone()
        n, rows, cols = x.shape[0], x.shape[-2], x.shape[-1]
        if cfg.time_shift:
            shifts = torch.randint(0, cols, (n,), generator=gen)
            col = (torch.arange(cols).unsqueeze(0) - shifts.unsqueeze(1)) % cols  # (n, cols)
            x = torch.gather(x, -1, col[:, None, None, :].expand_as(x))
        for fraction, size, axis in ((cfg.time_mask, cols, -1), (cfg.freq_mask, rows, -2)):
            widest = int(fraction * size)
            if widest < 1:
                continue
            pos = torch.arange(size).unsqueeze(0)
            for _ in range(cfg.masks):
                width = torch.randint(0, widest + 1, (n,), generator=gen)
                start = (torch.rand(n, generator=gen) * (size - width + 1)).long()
                hit = (pos >= start.unsqueeze(1)) & (pos < (start + width).unsqueeze(1))  # (n, size)
                shape = (n, 1, 1, size) if axis == -1 else (n, 1, size, 1)
                x = x.masked_fill(hit.view(shape), 0.0)
        return x

    return augment
