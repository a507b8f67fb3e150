"""torch.distributed set-up from the launcher's environment (torchrun, or accelerate launch on GPUs, set
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT). Without them the run is a single process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from skingpt4.common.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str, backend: str) -> DistInfo:
    """Pick this process's device and, under a launcher with WORLD_SIZE > 1, join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA GPU is available; use run.device=cpu (or auto)")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if use_cuda else "gloo"
        if backend == "nccl" and not use_cuda:
            raise ConfigError("run.dist_backend=nccl needs GPUs; on CPU use gloo (or auto)")
        dist.init_process_group(backend=backend, device_id=torch_device if use_cuda else None)
    return DistInfo(rank, world_size, local_rank, torch_device)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensors, nested in dicts) on this process's device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
