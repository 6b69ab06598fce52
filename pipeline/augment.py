"""Training-time augmentations for inspection images, on normalised batches (never for evaluation)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.config import AugmentConfig

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def make_augment(cfg: AugmentConfig, std: float) -> Augment | None:
    """A batch augmentation drawing per-sample flips, 90-degree turns, brightness and contrast.

    Args:
        cfg: which augmentations, and how strong.
        std: the normalisation's std, to express brightness in units of the [0, 1] image range.

    Returns:
        None when nothing is enabled.
    """
    if not cfg.active:
        return None

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
