"""A plain training loop: one strategy, one model, per-epoch validation, best weights kept."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline import distributed
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.metrics import classification_metrics


@dataclass
class TrainResult:
    """What `fit` measured: one row of metrics per epoch and the best epoch (0-based) by validation."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    train_seconds: float = 0.0
    stopped_epoch: int | None = None  # early stopping ended the training after this epoch


def select_device(preference: str) -> torch.device:
    """`auto` picks CUDA when usable, else the CPU; `cuda` without a GPU falls back with a warning."""
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        print("warning: train.device is 'cuda' but no CUDA device is usable; training on the CPU")
    return torch.device("cpu")


def epoch_order(
    n: int, generator: torch.Generator | None = None, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The sample order of an epoch: in order, shuffled (a generator), or drawn with replacement in
    proportion to `weights` (a weighted sampler: n draws per epoch)."""
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=generator)
    if generator is not None:
        return torch.randperm(n, generator=generator)
    return torch.arange(n)


def batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
    *,
    sharded: bool = False,
) -> Iterator[torch.Tensor]:
    """Index batches over n samples (see `epoch_order`); `sharded`: this rank's share under torchrun."""
    order = epoch_order(n, generator, weights)
    if sharded:
        order = distributed.shard(order)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def epoch_metric(select_metric: str) -> str:
    """What picks a trial's best epoch: `select_metric`, but clean validation accuracy for
    ``val_robust`` (the perturbed windows score whole trials, not every epoch)."""
    return "val_accuracy" if select_metric == "val_robust" else select_metric


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 128, device: torch.device = torch.device("cpu")
) -> torch.Tensor:
    """(N, classes) float32 logits on the CPU, in input order; leaves `model` in eval mode.

    A view average (`model.tta`) runs each input several times: the batch shrinks to match."""
    from models import view_count

    model.eval()
    batch_size = max(1, batch_size // view_count(model))
    outs = [model(x[idx].to(device, non_blocking=True)).float().cpu() for idx in batches(len(x), batch_size)]
    return torch.cat(outs) if outs else torch.zeros((0, 0))


def split_decay(
    params: list[tuple[str, nn.Parameter]], weight_decay: float, name: str, lr: float
) -> list[dict[str, Any]]:
    """Weight decay on weights only, never on norms and biases (1-D parameters)."""
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "name": name, "lr": lr})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": f"{name}_norms_biases", "lr": lr})
    return groups


def param_groups(model: nn.Module, weight_decay: float, lr: float = 1e-3) -> list[dict[str, Any]]:
    """All parameters at one rate: weights (decayed) and norms/biases (not)."""
    groups = split_decay(list(model.named_parameters()), weight_decay, "weights", lr)
    for g in groups:  # historical names of the two groups, kept for the learning-rate metrics
        g["name"] = "weights" if g["weight_decay"] else "norms_biases"
    return groups


def strategy_groups(
    model: nn.Module, backbone: str, strategy: StrategyConfig, weight_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups with the strategy's rates, from the backbone's layer groups.

    discriminative: the first half of the backbone's groups at lr x early, the second half at
    lr x late, the head at lr x head. gradual_unfreeze: the head at lr, the backbone at
    lr x unfreeze_factor (frozen until `head_epochs` have passed). Others: one rate for all.
    """
    from models import layer_groups

    named = dict((id(p), n) for n, p in model.named_parameters())
    groups = layer_groups(model, backbone)
    body = [(g, ps) for g, ps in groups if g != "head"]
    head = [(named[id(p)], p) for g, ps in groups if g == "head" for p in ps]
    if strategy.kind == "discriminative":
        m = strategy.multipliers
        out: list[dict[str, Any]] = []
        for i, (g, ps) in enumerate(body):
            factor = m.early if i < (len(body) + 1) // 2 else m.late
            out += split_decay([(named[id(p)], p) for p in ps], weight_decay, g, strategy.rate * factor)
        return out + split_decay(head, weight_decay, "head", strategy.rate * m.head)
    if strategy.kind == "gradual_unfreeze":
        rest = [(named[id(p)], p) for _, ps in body for p in ps]
        return split_decay(
            rest, weight_decay, "backbone", strategy.rate * strategy.unfreeze_factor
        ) + split_decay(head, weight_decay, "head", strategy.rate)
    return param_groups(model, weight_decay, strategy.rate)


def make_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over `groups`, which carry their own rates and weight decay.

    SGD is Nesterov only with a non-zero momentum: torch refuses Nesterov without momentum.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=groups[0]["lr"], momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: cosine, step or constant after an optional linear warm-up, or one-cycle."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=min(0.9, warmup / total) if warmup else 0.3,
            anneal_strategy="cos",
        )

    if cfg.schedule == "cosine" and not warmup:  # torch's own: the exact numbers of earlier runs
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = step - warmup
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t / max(1, total - warmup))))
        if cfg.schedule == "step":
            return cfg.step_gamma ** (t // (cfg.step_epochs * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze_except(model: nn.Module, trainable: set[int]) -> None:
    """Only parameters whose id is in `trainable` get gradients; BatchNorm layers with no trainable
    parameter are put in eval mode, so their running statistics do not move either (call after
    `model.train()`)."""
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(id(p) in trainable for p in own):
                module.eval()


@torch.no_grad()
def features_of(
    model: nn.Module, head: str, x: torch.Tensor, *, device: torch.device, batch_size: int = 128
) -> torch.Tensor:
    """What reaches the head: the model in eval mode with its head replaced by the identity."""
    from models import replace_module

    original = replace_module(model, head, nn.Identity())
    try:
        return predict_logits(model, x, batch_size=batch_size, device=device)
    finally:
        replace_module(model, head, original)


def channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """Train in channels_last: always on CUDA (tensor cores); on the CPU when `train.channels_last`
    is true (oneDNN runs a Lite0 step 1.5-1.7x faster, benchmarks/RESULTS.md, but its results then
    differ in the last bits from run to run, so a resumed or re-run job is no longer bit-identical)."""
    return device.type == "cuda" or bool(cfg.channels_last)


@dataclass
class _Run:
    """What one call of `fit` trains with: the module that learns, its inputs, optimiser and loss."""

    net: nn.Module  # the whole model, or only its head on cached features
    inputs_train: torch.Tensor
    inputs_val: torch.Tensor
    y_train: torch.Tensor
    y_val: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    sample_weight: torch.Tensor | None
    generator: torch.Generator
    rank_batch: int
    head_name: str
    head_ids: set[int]
    probe: bool
    cached: bool
    amp: bool
    amp_dtype: torch.dtype
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None = None  # the averaged copy of the whole model

    def eval_net(self) -> nn.Module:
        """What validation scores: the averaged weights with EMA, else the weights being trained."""
        if self.ema is None:
            return self.net
        return self.ema.module.get_submodule(self.head_name) if self.cached else self.ema.module


def _prepare(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    n_classes: int,
    strategy: StrategyConfig,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    backbone: str,
    cache_features: bool,
) -> _Run:
    """Model on the device, features cached for a linear probe, optimiser, schedule, loss, sampler."""
    from models import head_path, layer_groups

    x_train, y_train = train
    x_val, y_val = val
    model.to(device)
    if channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    head_name = head_path(backbone)
    head_ids = {id(p) for g, ps in layer_groups(model, backbone) if g == "head" for p in ps}
    probe = strategy.kind == "linear_probe"
    cached = probe and cache_features
    if cached:  # the network the head sees is fixed: compute its input once
        feat_train = features_of(model, head_name, x_train, device=device)
        feat_val = features_of(model, head_name, x_val, device=device)
        net: nn.Module = model.get_submodule(head_name)
        inputs_train, inputs_val = feat_train, feat_val
    else:
        net, inputs_train, inputs_val = model, x_train, x_val
    groups = (
        param_groups(model.get_submodule(head_name), cfg.weight_decay, strategy.rate)
        if probe
        else strategy_groups(model, backbone, strategy, cfg.weight_decay)
    )
    optimizer = make_optimizer(groups, cfg)
    world = distributed.world()
    # Under torchrun each rank takes its share of every batch: the global batch stays batch_size.
    rank_batch = cfg.batch_size if world is None else -(-cfg.batch_size // world.size)
    steps_per_epoch = math.ceil(
        (len(x_train) if world is None else -(-len(x_train) // world.size)) / rank_batch
    )
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    counts = torch.bincount(y_train, minlength=n_classes).float()
    # Balanced weights n / (K * count): a class seen half as often weighs twice as much.
    class_weight = torch.where(
        counts > 0, len(y_train) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts)
    )
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weight.to(device) if cfg.class_weighting == "loss" else None,
        label_smoothing=cfg.label_smoothing,
    )
    amp = device.type == "cuda" and not cached
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return _Run(
        net=net,
        inputs_train=inputs_train,
        inputs_val=inputs_val,
        y_train=y_train,
        y_val=y_val,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        sample_weight=class_weight[y_train] if cfg.class_weighting == "sampler" else None,
        generator=torch.Generator().manual_seed(seed),
        rank_batch=rank_batch,
        head_name=head_name,
        head_ids=head_ids,
        probe=probe,
        cached=cached,
        amp=amp,
        amp_dtype=amp_dtype,
        # float16 gradients underflow without loss scaling; bfloat16 and the CPU need none.
        scaler=torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16),
        ema=(
            None
            if cfg.ema is None
            else torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True
            )
        ),
    )


def _restore(
    run: _Run, model: nn.Module, checkpoint: Path, result: TrainResult
) -> tuple[Any, int, int, float]:
    """Continue from `checkpoint`: model, optimiser, schedule, data order, RNG, history and best
    weights. Returns (best weights, epochs since the best, first epoch to run, seconds spent)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.generator.set_state(state["generator"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"])  # dropout draws: the continuation is the uninterrupted run
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.history = [dict(row) for row in state["history"]]
    result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
    best_file = best_checkpoint_path(checkpoint)
    best_state = (
        torch.load(best_file, map_location="cpu", weights_only=True)["model"] if best_file.is_file() else None
    )
    return best_state, state["since_best"], state["epoch"] + 1, state["train_seconds"]


def _set_trainable(run: _Run, model: nn.Module, strategy: StrategyConfig, epoch: int) -> None:
    """Train mode, with what the strategy freezes at this epoch frozen."""
    run.net.train()
    if run.probe and not run.cached:  # the same computation as the cached path: backbone in eval mode, frozen
        model.eval()
        model.get_submodule(run.head_name).train()
        freeze_except(model, run.head_ids)
    elif strategy.kind == "gradual_unfreeze":
        everything = {id(p) for p in model.parameters()}
        freeze_except(model, run.head_ids if epoch < strategy.head_epochs else everything)


def ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """The EMA step of `AveragedModel` with timm's warm-up: after n updates the decay is
    min(decay, (1 + n) / (10 + n)), so early averages follow the weights instead of holding on to
    the random start (a fixed 0.998 kept a constant classifier for five FordA epochs). Integer
    buffers (BatchNorm's batch counters) take the model's value."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1 + n) / (10 + n))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1 - d)
            else:
                a.copy_(c)

    return update


def mixup_draw(n: int, alpha: float, gen: torch.Generator) -> tuple[float, torch.Tensor | None]:
    """Mixup's weight lam ~ Beta(alpha, alpha) and the partner of each sample (a permutation of the
    batch), both from the run's generator; (1.0, None) when mixup is off or the batch has one sample."""
    if alpha <= 0 or n < 2:
        return 1.0, None
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return lam, torch.randperm(n, generator=gen)


def _train_epoch(
    run: _Run,
    model: nn.Module,
    *,
    desc: str,
    cfg: TrainConfig,
    device: torch.device,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
    show: bool,
) -> tuple[int, float, int]:
    """One pass over this rank's share of the training data: (samples, summed loss, correct)."""
    seen, loss_sum, correct = 0, 0.0, 0
    trainer = distributed.wrap(run.net, device)  # per epoch: gradual unfreezing changes what trains
    order = batches(len(run.inputs_train), run.rank_batch, run.generator, run.sample_weight, sharded=True)
    bar = tqdm(list(order), desc=desc, leave=False, disable=None if show else True)
    for idx in bar:
        xb = (
            run.inputs_train[idx]
            if augment is None or run.cached
            else augment(run.inputs_train[idx], run.generator)
        )
        if device.type == "cuda":  # page-locked host memory: the copy overlaps with compute
            xb = xb.pin_memory()
        xb = xb.to(device, non_blocking=True)
        if xb.ndim == 4 and channels_last(cfg, device):
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = run.y_train[idx].to(device, non_blocking=True)
        lam, partner = mixup_draw(len(idx), cfg.mixup, run.generator)
        if partner is not None:
            partner = partner.to(device)
            xb = lam * xb + (1 - lam) * xb[partner]
        with torch.autocast(device_type=device.type, dtype=run.amp_dtype, enabled=run.amp):
            logits = trainer(xb)
            loss = run.loss_fn(logits.float(), yb)
            if partner is not None:
                loss = lam * loss + (1 - lam) * run.loss_fn(logits.float(), yb[partner])
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            run.scaler.unscale_(run.optimizer)
            params = [p for g in run.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        seen += len(idx)
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    seen, loss_sum, correct = distributed.all_sum([seen, loss_sum, correct])  # every rank's share
    return int(seen), float(loss_sum), int(correct)


def _validate(run: _Run, *, n_classes: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 of the current weights."""
    val_logits = predict_logits(run.eval_net(), run.inputs_val, batch_size=max(batch_size, 64), device=device)
    val_loss = float(nn.CrossEntropyLoss()(val_logits, run.y_val)) if len(run.y_val) else float("nan")
    val_metrics = classification_metrics(run.y_val.numpy(), val_logits.argmax(1).numpy(), n_classes)
    return {
        "val_loss": val_loss,
        "val_accuracy": val_metrics["accuracy"],
        "val_macro_f1": val_metrics["macro_f1"],
    }


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    n_classes: int,
    strategy: StrategyConfig,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    backbone: str = "efficientnet_lite0",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    cache_features: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train `model` in place with the strategy; on return it holds the best validation epoch's weights.

    A checkpoint (model, optimizer, scheduler, epoch) is written atomically after every epoch, so
    an interrupted run keeps its last state on disk; the best epoch's weights go to
    `best_checkpoint_path(checkpoint)`. `linear_probe` with `cache_features` computes the frozen
    backbone's features once and trains only the head on them (no augmentation: the features are
    fixed); without it, the frozen backbone runs every epoch. With `resume` and a checkpoint on
    disk, training continues after the checkpoint's epoch with its model, optimizer, scheduler,
    data-order generator, history and best weights.
    """
    began = time.perf_counter()  # training time includes the linear probe's feature pass
    run = _prepare(
        model, train, val, n_classes=n_classes, strategy=strategy, cfg=cfg, seed=seed, device=device,
        backbone=backbone, cache_features=cache_features,
    )  # fmt: skip
    world = distributed.world()
    main = world is None or world.is_main
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    since_best, first_epoch, spent = 0, 0, 0.0
    if resume and checkpoint.is_file():
        best_state, since_best, first_epoch, spent = _restore(run, model, checkpoint, result)
    start = began - spent
    for epoch in range(first_epoch, cfg.epochs):
        _set_trainable(run, model, strategy, epoch)
        epoch_start = time.perf_counter()
        desc = f"{strategy.name} epoch {epoch + 1}/{cfg.epochs}"
        seen, loss_sum, correct = _train_epoch(
            run, model, desc=desc, cfg=cfg, device=device, augment=augment, show=main
        )
        row = {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            **_validate(run, n_classes=n_classes, batch_size=cfg.batch_size, device=device),
            "epoch_seconds": time.perf_counter() - epoch_start,
            **{f"lr_{g['name']}": g["lr"] for g in run.optimizer.param_groups},
        }
        result.history.append(row)
        score = distributed.from_main([row[epoch_metric(cfg.select_metric)]])[0]
        if score > result.best_score:
            result.best_score, result.best_epoch, since_best = score, epoch, 0
            scored = model if run.ema is None else run.ema.module
            best_state = copy.deepcopy(scored.state_dict())
            if main:
                save_checkpoint(
                    best_checkpoint_path(checkpoint),
                    model=scored,
                    epoch=epoch,
                    strategy=strategy.name,
                    score=score,
                )
        else:
            since_best += 1
        stop = cfg.early_stopping is not None and since_best >= cfg.early_stopping
        if main:  # one writer under torchrun
            save_checkpoint(
                checkpoint,
                model=model,
                optimizer=run.optimizer,
                scheduler=run.scheduler,
                epoch=epoch if not stop else cfg.epochs - 1,
                strategy=strategy.name,
                seed=seed,
                generator=run.generator.get_state(),
                ema=run.ema,
                rng=torch.get_rng_state(),
                cuda_rng=torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                history=result.history,
                best_epoch=result.best_epoch,
                best_score=result.best_score,
                since_best=since_best,
                train_seconds=time.perf_counter() - start,
            )
        if on_epoch is not None:
            on_epoch(epoch, row)
        if stop:
            result.stopped_epoch = epoch
            break
    for p in model.parameters():
        p.requires_grad_(True)
    result.train_seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def best_checkpoint_path(checkpoint: Path) -> Path:
    """Where `fit` keeps the best epoch's weights: ``<stem>.best<suffix>`` next to `checkpoint`."""
    return checkpoint.with_name(f"{checkpoint.stem}.best{checkpoint.suffix}")


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        k: (v.state_dict() if hasattr(v, "state_dict") and not isinstance(v, torch.Tensor) else v)
        for k, v in state.items()
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (CPU and every CUDA device)."""
    torch.manual_seed(seed)
