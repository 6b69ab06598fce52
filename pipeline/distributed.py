"""Data-parallel training under `torchrun`: process group, sharded batches, reduced metrics.

`torchrun --nproc_per_node=N -m pipeline run CFG` starts N processes with RANK/WORLD_SIZE set.
Each trains the same network on its shard of every batch (DistributedDataParallel averages the
gradients: NCCL on GPUs, gloo on CPUs); rank 0 alone prepares the cache, tracks in MLflow,
evaluates, exports and registers.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the torchrun process group."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_WORLD: World | None = None


def init_from_env() -> World | None:
    """Join the process group when started by torchrun with more than one process (else None)."""
    global _WORLD
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    if _WORLD is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        # Long: the other ranks wait at a barrier while rank 0 prepares (and caches) the data.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=4))
        _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank)
    return _WORLD


def world() -> World | None:
    """The world `init_from_env` joined, or None outside a process group."""
    return _WORLD


def barrier() -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    if _WORLD is not None:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    global _WORLD
    if _WORLD is not None:
        dist.destroy_process_group()
        _WORLD = None


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's share of an epoch's sample order, as `DistributedSampler` makes it: padded by
    repeating the first samples so that every rank runs the same number of steps, then strided."""
    if _WORLD is None:
        return order
    n = len(order)
    total = -(-n // _WORLD.size) * _WORLD.size
    padded = torch.cat([order, order[: total - n]]) if total > n else order
    return padded[_WORLD.rank :: _WORLD.size]


def _tensor(values: list[float]) -> torch.Tensor:
    """A tensor on the device the backend communicates from (NCCL: this rank's GPU)."""
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    return torch.tensor(values, dtype=torch.float64, device=device)


def all_sum(values: list[float]) -> list[float]:
    """Sum across ranks (identity without a process group)."""
    if _WORLD is None:
        return values
    t = _tensor(values)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def from_main(values: list[float]) -> list[float]:
    """Rank 0's values on every rank: decisions (best epoch, early stop) must agree, and each rank's
    validation can differ slightly (BatchNorm statistics of its own shard)."""
    if _WORLD is None:
        return values
    t = _tensor(values)
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the parameters that train now (identity without a group)."""
    if _WORLD is None or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
