"""The transfer-learning engine: backbone registry and weights, layer groups, strategies, schedules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from models import WeightsNotFoundError, build_model, head_path, layer_groups, list_backbones
from models.torchvision_zoo import NO_DOWNLOAD_ENV, cache_file
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.train import fit, freeze_except, make_optimizer, make_scheduler, strategy_groups

TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16",
    "vgg16_bn",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
]


def test_the_registry_holds_the_torchvision_cnns_and_the_lite_family():
    assert set(TORCHVISION + ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]) <= set(
        list_backbones()
    )


@pytest.mark.parametrize("name", sorted(list_backbones()))
def test_every_backbone_builds_runs_at_32px_and_its_groups_cover_every_parameter_once(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, pretrained=False, dropout=0.1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    groups = layer_groups(model, name)
    ids = [id(p) for _, ps in groups for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # each parameter exactly once
    names = [g for g, _ in groups]
    assert names[0] == "stem" and names[-1] == "head" and len(names) >= 4
    head = model.get_submodule(head_path(name))
    assert {id(p) for p in head.parameters()} == {
        id(p) for p in dict(groups)["head"]
    }  # the head group is the new head
    assert [m for m in head.modules() if isinstance(m, nn.Linear)][-1].out_features == 4


def test_imagenet_weights_missing_offline_name_the_cache_file_and_a_local_file_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    expected = cache_file("resnet18")
    assert expected == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(
        WeightsNotFoundError,
        match=r"not in the torch hub cache \(.*resnet18-f37072fd.pth\); download https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ):
        build_model("resnet18", num_classes=3, pretrained=True)
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    expected.parent.mkdir(parents=True)
    torch.save(state, expected)  # placed where torchvision looks: found without any download
    model = build_model("resnet18", num_classes=3, pretrained=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    local = tmp_path / "mine.pth"
    torch.save(state, local)
    assert torch.equal(
        build_model("resnet18", num_classes=3, pretrained=True, weights_path=local).layer4[1].conv2.weight,
        state["layer4.1.conv2.weight"],
    )


def test_discriminative_groups_get_their_rates():
    model = build_model("resnet18", num_classes=3, pretrained=False)
    strategy = StrategyConfig(name="d", kind="discriminative", lr=1e-3)
    rates = {g["name"]: g["lr"] for g in strategy_groups(model, "resnet18", strategy, 0.01)}
    assert rates["stem"] == pytest.approx(1e-4) and rates["stage2"] == pytest.approx(
        1e-4
    )  # early half: 0.1 x
    assert rates["stage3"] == pytest.approx(1e-3) and rates["stage4_norms_biases"] == pytest.approx(
        1e-3
    )  # late half
    assert rates["head"] == pytest.approx(1e-1)  # the seed's recipe: 1e-4 / 1e-3 / 1e-1
    decay = {g["name"]: g["weight_decay"] for g in strategy_groups(model, "resnet18", strategy, 0.01)}
    assert decay["stage1"] == 0.01 and decay["stage1_norms_biases"] == 0.0


def test_frozen_parameters_and_their_batchnorm_statistics_do_not_move():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, pretrained=False)
    head_ids = {id(p) for g, ps in layer_groups(model, "resnet18") if g == "head" for p in ps}
    before = copy.deepcopy(model.state_dict())
    model.train()
    freeze_except(model, head_ids)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 3, (8,)))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(k.startswith("fc.") for k in moved)  # running_mean/var of every BN stayed too
    assert not model.layer1[0].bn1.training and model.fc.training


def _tiny(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() * 0.6
    return x, y


def test_cached_linear_probe_matches_the_uncached_one_and_leaves_the_backbone_alone(tmp_path):
    train, val = _tiny(48, 0), _tiny(24, 1)
    cfg = TrainConfig(epochs=3, batch_size=16)
    strategy = StrategyConfig(name="probe", kind="linear_probe", lr=3e-2)
    results = {}
    for cached in (True, False):
        torch.manual_seed(0)
        model = build_model("resnet18", num_classes=3, pretrained=False)
        backbone_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
        out = fit(
            model,
            train,
            val,
            n_classes=3,
            strategy=strategy,
            cfg=cfg,
            seed=0,
            device=torch.device("cpu"),
            checkpoint=tmp_path / f"p{cached}.pt",
            backbone="resnet18",
            cache_features=cached,
        )
        after = model.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in backbone_before.items())
        results[cached] = out
    accs = {c: [round(r["val_accuracy"], 6) for r in results[c].history] for c in results}
    assert accs[True] == accs[False]
    losses = (
        [r["train_loss"] for r in results[True].history],
        [r["train_loss"] for r in results[False].history],
    )
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_gradual_unfreeze_trains_the_head_first_then_everything(tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", num_classes=3, pretrained=False)
    stem = model.features[0][0].weight.detach().clone()
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        strategies=(StrategyConfig(name="g", kind="gradual_unfreeze", lr=1e-2, head_epochs=1),),
    )
    seen: list[torch.Tensor] = []
    fit(
        model,
        _tiny(32),
        _tiny(16, 1),
        n_classes=3,
        strategy=cfg.strategies[0],
        cfg=cfg,
        seed=0,
        device=torch.device("cpu"),
        checkpoint=tmp_path / "g.pt",
        backbone="mobilenet_v3_small",
        on_epoch=lambda epoch, row: seen.append(
            torch.load(tmp_path / "g.pt", weights_only=True)["model"]["features.0.0.weight"].clone()
        ),
    )
    assert torch.equal(seen[0], stem)  # epoch 1: the backbone is frozen
    assert not torch.equal(seen[1], stem)  # epoch 2: unfrozen, at lr x unfreeze_factor
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_schedules_warm_up_and_decay(schedule):
    param = nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(epochs=4, schedule=schedule, warmup_epochs=1, step_epochs=2, step_gamma=0.1)
    optimizer = make_optimizer([{"params": [param], "lr": 0.1, "name": "p"}], cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < 0.1 * 0.5 and max(lrs) == pytest.approx(0.1, rel=0.05)  # warm-up from low to the peak
    peak = lrs.index(max(lrs))
    assert 8 <= peak <= 12
    if schedule == "step":
        assert lrs[15] == pytest.approx(0.1) and lrs[35] == pytest.approx(
            0.01
        )  # after warm-up, x0.1 every 2 epochs
    elif schedule == "constant":
        assert lrs[-1] == pytest.approx(0.1)
    else:
        assert lrs[-1] < 0.01


def test_early_stopping_label_smoothing_and_gradient_clipping(tmp_path):
    cfg = TrainConfig(
        epochs=6, batch_size=16, early_stopping=2, label_smoothing=0.1, grad_clip=0.5, optimizer="sgd"
    )
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, pretrained=False)
    out = fit(
        model,
        _tiny(32),
        _tiny(16, 1),
        n_classes=3,
        strategy=StrategyConfig(name="s", kind="linear_probe", lr=1e-9),
        cfg=cfg,
        seed=0,
        device=torch.device("cpu"),
        checkpoint=tmp_path / "s.pt",
        backbone="resnet18",
    )
    assert (
        out.stopped_epoch == 2 and len(out.history) == 3
    )  # fixed features, negligible rate: no improvement, stopped after patience 2
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in out.history)


def test_resume_continues_from_the_saved_epoch_exactly(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=16)
    strategy = StrategyConfig(name="f", kind="finetune", lr=1e-2)
    common = dict(
        n_classes=3,
        strategy=strategy,
        cfg=cfg,
        seed=0,
        device=torch.device("cpu"),
        backbone="mobilenet_v3_small",
    )

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build_model("mobilenet_v3_small", num_classes=3, pretrained=False)

    straight = fit(model(), _tiny(32), _tiny(16, 1), checkpoint=tmp_path / "a.pt", **common)

    def stop_after_second(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            model(),
            _tiny(32),
            _tiny(16, 1),
            checkpoint=tmp_path / "b.pt",
            on_epoch=stop_after_second,
            **common,
        )
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(123)  # a new process: other global RNG state, restored from the checkpoint
    resumed = fit(model(), _tiny(32), _tiny(16, 1), checkpoint=tmp_path / "b.pt", resume=True, **common)
    assert len(resumed.history) == 4
    for a, b in zip(straight.history, resumed.history):
        assert (
            a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
            and a["val_accuracy"] == b["val_accuracy"]
        )
    assert resumed.best_epoch == straight.best_epoch


def test_image_size_null_takes_the_backbones_native_input_size():
    from pipeline.config import load_config
    from tests.conftest import ROOT

    sizes = {
        b: load_config(
            ROOT / "configs" / "gearbox.yaml", ["transform.image_size=null", f"model.backbone={b}"]
        ).transform.image_size
        for b in ("resnet18", "efficientnet_lite1", "efficientnet_lite2")
    }
    assert sizes == {"resnet18": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    assert load_config(ROOT / "configs" / "gearbox.yaml").transform.image_size == 64  # explicit sizes stay
