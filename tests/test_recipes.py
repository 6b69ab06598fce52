"""Training recipes: SpecAugment-style masks and a circular time shift for signal images, mixup and
an exponential moving average of the weights (issue 11, part 2)."""

from __future__ import annotations

import pytest
import torch

from models import build_model
from pipeline.augment import make_augment
from pipeline.config import AugmentConfig, ConfigError, StrategyConfig, TrainConfig, load_config
from pipeline.train import fit, mixup_draw
from tests.conftest import ROOT


def _images(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
    return x, y


def test_masks_zero_whole_bands_within_their_limits_and_the_shift_is_a_roll():
    x = torch.randn(64, 3, 20, 40) + 5.0  # no zeros before masking
    before = x.clone()
    masked = make_augment(AugmentConfig(time_mask=0.25, freq_mask=0.2, masks=1), 1.0)(
        x, torch.Generator().manual_seed(0)
    )
    assert not torch.equal(masked, x) and torch.equal(x, before)  # the input is untouched
    zero = masked == 0
    cols = zero.all(dim=(1, 2))  # (n, 40): whole columns zeroed on every channel and row
    rows = zero.all(dim=(1, 3))  # (n, 20)
    assert 0 < cols.sum(1).max() <= 10 and 0 < rows.sum(1).max() <= 4
    for c in cols:  # one contiguous band
        where = torch.nonzero(c).flatten()
        assert len(where) == 0 or where[-1] - where[0] + 1 == len(where)
    assert torch.equal(zero, (cols[:, None, None, :] | rows[:, None, :, None]).expand_as(zero))  # only bands
    assert torch.equal(masked[~zero], x[~zero])

    shifted = make_augment(AugmentConfig(time_shift=True), 1.0)(x, torch.Generator().manual_seed(1))
    moved = 0
    for a, b in zip(x, shifted):
        k = next(k for k in range(40) if torch.equal(torch.roll(a, k, dims=-1), b))
        moved += k != 0
    assert moved > 50  # a random roll per sample, along time only


def test_masking_changes_only_training_batches(tmp_path):
    """The augmentation sees every training sample once an epoch and never a validation one: the
    validation scores of a masked run are those of its model on the clean validation images."""
    train, val = _images(32, 0), _images(16, 1)
    augment = make_augment(AugmentConfig(time_mask=0.3, freq_mask=0.3), 1.0)
    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seen.append(x.clone())
        return augment(x, gen)

    cfg = TrainConfig(epochs=2, batch_size=8)
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", num_classes=2, pretrained=False)
    val_before = val[0].clone()
    out = fit(
        model, train, val, n_classes=2, strategy=StrategyConfig(name="s", kind="scratch", lr=1e-3),
        cfg=cfg, seed=0, device=torch.device("cpu"), checkpoint=tmp_path / "s.pt",
        backbone="mobilenet_v3_small", augment=recording,
    )  # fmt: skip
    assert sum(len(b) for b in seen) == 2 * len(train[0])
    rows = {tuple(r.flatten()[:8].tolist()) for b in seen for r in b}
    assert rows == {tuple(r.flatten()[:8].tolist()) for r in train[0]}  # training samples only
    assert torch.equal(val[0], val_before)
    model.eval()
    with torch.no_grad():
        acc = float((model(val[0]).argmax(1) == val[1]).float().mean())
    assert acc == pytest.approx(out.history[out.best_epoch]["val_accuracy"])


def test_mixup_draws_from_the_runs_generator_and_changes_the_training_loss(tmp_path):
    lam, partner = mixup_draw(8, 0.4, torch.Generator().manual_seed(3))
    again = mixup_draw(8, 0.4, torch.Generator().manual_seed(3))
    assert 0 <= lam <= 1 and lam == again[0] and torch.equal(partner, again[1])
    assert sorted(partner.tolist()) == list(range(8))
    assert mixup_draw(8, 0.0, torch.Generator()) == (1.0, None)

    def run(mixup: float) -> list[float]:
        torch.manual_seed(0)
        model = build_model("mobilenet_v3_small", num_classes=2, pretrained=False)
        out = fit(
            model, _images(32, 0), _images(16, 1), n_classes=2,
            strategy=StrategyConfig(name="s", kind="scratch", lr=1e-3),
            cfg=TrainConfig(epochs=1, batch_size=8, mixup=mixup), seed=0, device=torch.device("cpu"),
            checkpoint=tmp_path / f"m{mixup}.pt", backbone="mobilenet_v3_small",
        )  # fmt: skip
        return [r["train_loss"] for r in out.history]

    assert run(0.0) != run(0.4)


def test_ema_is_the_running_average_of_the_weights_and_resumes_with_it(tmp_path):
    """One step an epoch (8 samples, batch 8): the averaged weights in the checkpoint are
    e_1 = w_1, e_k = d_k e_(k-1) + (1 - d_k) w_k of the weights after each step; the model `fit` returns
    is the average at the best epoch; an interrupted run resumes with its average."""
    decay, common = 0.25, dict(n_classes=2, device=torch.device("cpu"), backbone="mobilenet_v3_small")
    steps: list[dict[str, torch.Tensor]] = []

    def train(name: str, **kw) -> tuple[torch.nn.Module, object]:
        torch.manual_seed(0)
        m = build_model("mobilenet_v3_small", num_classes=2, pretrained=False)
        out = fit(
            m, _images(8, 0), _images(16, 1), strategy=StrategyConfig(name="s", kind="scratch", lr=3e-3),
            cfg=TrainConfig(epochs=4, batch_size=8, ema=decay), seed=0, checkpoint=tmp_path / f"{name}.pt",
            on_epoch=kw.pop("on_epoch", lambda e, r: steps.append(
                {k: v.detach().clone() for k, v in m.named_parameters()})),
            **common, **kw,
        )  # fmt: skip
        return m, out

    model, straight = train("ema")
    expected = dict(steps[0])
    for n, w in enumerate(steps[1:], start=1):  # with the warm-up: min(decay, (1 + n) / (10 + n))
        d = min(decay, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * w[k] for k in w}
    saved = torch.load(tmp_path / "ema.pt", weights_only=True)["ema"]
    for k, v in expected.items():
        torch.testing.assert_close(saved[f"module.{k}"], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected["classifier.3.weight"], steps[-1]["classifier.3.weight"])
    best = torch.load(tmp_path / "ema.best.pt", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k])

    def stop_after_second(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("cut", on_epoch=stop_after_second)
    torch.manual_seed(123)
    resumed, out = train("cut", resume=True, on_epoch=None)
    assert [r["val_loss"] for r in out.history] == pytest.approx([r["val_loss"] for r in straight.history])
    for k, v in torch.load(tmp_path / "cut.pt", weights_only=True)["ema"].items():
        torch.testing.assert_close(v, saved[k])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.augment.time_mask=0.1", "transform.kind=gaf"], "transform.kind is 'gaf'"),
        (["train.augment.hflip=true"], "time_mask, freq_mask and time_shift are the signal-image"),
        (["train.mixup=-1"], "train.mixup"),
        (["train.ema=1.5"], "train.ema"),
    ],
)
def test_recipe_options_are_checked_at_load_time(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(ROOT / "configs" / "gearbox.yaml", overrides)


def test_signal_image_augmentations_are_refused_for_inspection_images():
    with pytest.raises(ConfigError, match="for inspection images use hflip"):
        load_config(ROOT / "configs" / "elpv.yaml", ["train.augment.time_shift=true"])
