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

import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.metrics import classification_metrics


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    train_seconds: float = 0.0


def select_device(preference: str) -> torch.device:
    """`auto` picks CUDA when usable, else the CPU; `cuda` without a GPU falls back with a warning."""
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        print("warning: train.device is 'cuda' but no CUDA device is usable; training on the CPU")
    return torch.device("cpu")


def batches(n: int, batch_size: int, generator: torch.Generator | None = None, weights: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Index batches over n samples: in order, shuffled (a generator), or drawn with replacement in
    proportion to `weights` (a weighted sampler: n draws per epoch)."""
    if weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=generator)
    elif generator is not None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 128, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    model.eval()
    outs = [model(x[idx].to(device, non_blocking=True)).float().cpu() for idx in batches(len(x), batch_size)]
    return torch.cat(outs) if outs else torch.zeros((0, 0))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights only, never on norms and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "weight_decay": 0.0, "name": "norms_biases"},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


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
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    A checkpoint (model, optimizer, epoch) is written atomically after every epoch, so an
    interrupted run keeps its last state on disk; the best epoch's weights go to
    `best_checkpoint_path(checkpoint)`.
    """
    x_train, y_train = train
    x_val, y_val = val
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, strategy.lr)
    steps = cfg.epochs * math.ceil(len(x_train) / cfg.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
        if cfg.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    )
    counts = torch.bincount(y_train, minlength=n_classes).float()
    # Balanced weights n / (K * count): a class seen half as often weighs twice as much.
    class_weight = torch.where(counts > 0, len(y_train) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    loss_fn = nn.CrossEntropyLoss(weight=class_weight.to(device) if cfg.class_weighting == "loss" else None)
    eval_loss = nn.CrossEntropyLoss()
    sample_weight = class_weight[y_train] if cfg.class_weighting == "sampler" else None
    generator = torch.Generator().manual_seed(seed)
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    # float16 gradients underflow without loss scaling; bfloat16 and the CPU need none.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        epoch_start = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(
            list(batches(len(x_train), cfg.batch_size, generator, sample_weight)),
            desc=f"{strategy.name} epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None,
        )
        for idx in bar:
            xb = x_train[idx] if augment is None else augment(x_train[idx], generator)
            xb = xb.to(device, non_blocking=True)
            yb = y_train[idx].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
                logits = model(xb)
                loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        val_logits = predict_logits(model, x_val, batch_size=max(cfg.batch_size, 64), device=device)
        val_loss = float(eval_loss(val_logits, y_val)) if len(y_val) else float("nan")
        val_metrics = classification_metrics(y_val.numpy(), val_logits.argmax(1).numpy(), n_classes)
        row = {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_metrics["accuracy"],
            "val_macro_f1": val_metrics["macro_f1"],
            "epoch_seconds": time.perf_counter() - epoch_start,
            **{f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups},
        }
        result.history.append(row)
        score = row[cfg.select_metric]
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
            save_checkpoint(best_checkpoint_path(checkpoint), model=model, epoch=epoch, strategy=strategy.name, score=score)
        save_checkpoint(checkpoint, model=model, optimizer=optimizer, epoch=epoch, strategy=strategy.name, seed=seed)
        if on_epoch is not None:
            on_epoch(epoch, row)
    result.train_seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def best_checkpoint_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.best{checkpoint.suffix}")


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in state.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
