"""What the exported model adds around the trained network: the test-time view average
(`ViewAverage`) and the operating point's class offset (`ClassOffset`).

Test-time augmentation: a network that answers for an image by averaging over its flips and turns.

A solar cell or a PCB photographed upside down is the same part, so its class must not change
under the symmetries of the square. `ViewAverage` runs the wrapped network on every view of each
input in one batch and averages what reaches the classification head over the views: with a
linear head (every backbone here) that is exactly the mean of the views' logits, and the
penultimate features the exported model reports (the drift reference) are the averaged ones.
The wrapper is plain torch and exports to ONNX as one graph, so the line's model is the model
that was validated.

Signal images (spectrograms, scalograms) have frequency rows and time columns: a flipped one is
another signal, and the job's config refuses views for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.registry import BandProfile, head_path

View = Callable[[torch.Tensor], torch.Tensor]


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2)


# The views of each setting, as functions of an (N, C, H, W) batch; the first is always the image.
VIEWS: dict[str, tuple[View, ...]] = {
    "none": (lambda x: x,),
    "flips": (
        lambda x: x,
        lambda x: x.flip(-1),
        lambda x: x.flip(-2),
        lambda x: x.flip(-2, -1),
    ),
    "dihedral": (  # the eight symmetries of the square: the four flips, and each after a transpose
        lambda x: x,
        lambda x: x.flip(-1),
        lambda x: x.flip(-2),
        lambda x: x.flip(-2, -1),
        lambda x: _transpose(x),
        lambda x: _transpose(x).flip(-1),
        lambda x: _transpose(x).flip(-2),
        lambda x: _transpose(x).flip(-2, -1),
    ),
}


class ViewAverage(nn.Module):
    """`model` on every view of each input, the head's input averaged over the views.

    Args:
        model: the trained network (left as it is apart from a forward pre-hook on its head,
            which acts only inside this wrapper's forward).
        head: dotted path of the model's classification head (`head_path`); the head must be the
            last module the model's forward calls, as it is for every registered backbone.
        views: a key of `VIEWS` other than "none".
    """

    def __init__(self, model: nn.Module, head: str, views: str) -> None:
        super().__init__()
        if views not in VIEWS or views == "none":
            raise ValueError(f"views must be one of {sorted(set(VIEWS) - {'none'})}, got {views!r}")
        if any(isinstance(m, BandProfile) for m in model.modules()):
            raise ValueError("the band-profile path adds logits after the head: it cannot average views")
        self.model = model
        self.views = views
        self.head = head
        self._n_views = len(VIEWS[views])
        self._active = False
        model.get_submodule(head).register_forward_pre_hook(self._average)

    def _average(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if not self._active:
            return None
        stacked = args[0]
        per_view = stacked.reshape(self._n_views, -1, *stacked.shape[1:])
        return (per_view.mean(0), *args[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.views == "dihedral" and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"dihedral views need square images, got {tuple(x.shape[-2:])}")
        stacked = torch.cat([view(x) for view in VIEWS[self.views]])
        self._active = True
        try:
            return self.model(stacked)
        finally:
            self._active = False


class ClassOffset(nn.Module):
    """`model`'s logits plus a constant per class: an operating point moved into the graph.

    Adding `offsets[c]` to class c's logit is the same as lowering the probability a sample needs
    to be called c (a binary threshold t is the offset log((1 - t) / t));
    `pipeline.operating_point.choose_offset` picks it on validation for a required recall of one class.
    """

    def __init__(self, model: nn.Module, offsets: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.float32).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets: torch.Tensor = self.get_buffer("offsets")
        return self.model(x) + offsets


def _wrappers(model: nn.Module) -> tuple[nn.Module, str]:
    """The network inside any `ViewAverage`/`ClassOffset` layers, and the dotted prefix to reach it."""
    prefix = ""
    while isinstance(model, ViewAverage | ClassOffset):
        model, prefix = model.model, prefix + "model."
    return model, prefix


def with_views(model: nn.Module, backbone: str, views: str) -> nn.Module:
    """`model` itself for "none", else the `ViewAverage` of its `views`."""
    return model if views == "none" else ViewAverage(model, head_path(backbone), views)


def decision_model(
    model: nn.Module, backbone: str, views: str = "none", offsets: Sequence[float] = ()
) -> nn.Module:
    """`model` as the exported graph decides: inside the view average of `views`, then, when
    `offsets` (one per class) are given, the `ClassOffset` that adds them to the logits."""
    wrapped = with_views(model, backbone, views)
    if len(offsets):
        wrapped = ClassOffset(wrapped, torch.tensor([float(v) for v in offsets]))
    return wrapped


def view_count(model: nn.Module) -> int:
    """How many forward passes of the network one input of `model` costs (1 without a view average):
    callers divide their batch by it to keep the memory of a batch."""
    while isinstance(model, ClassOffset):
        model = model.model
    return len(VIEWS[model.views]) if isinstance(model, ViewAverage) else 1


def single_view(model: nn.Module) -> nn.Module:
    """The trained network inside the view average and class offset (the model itself without them):
    what Grad-CAM explains and what the logged PyTorch weights hold."""
    return _wrappers(model)[0]


def scoring_head(model: nn.Module, backbone: str) -> str:
    """Dotted path of the classification head of `model` as it is scored and exported (inside its
    view average and class offset too): the hook point of the exported ``features`` output."""
    return _wrappers(model)[1] + head_path(backbone)
