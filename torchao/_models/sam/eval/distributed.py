"""torchrun support: one process per GPU (nccl) or CPU process (gloo); images are sharded
round-robin by rank and the ranks' totals are reduced at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, str]:
    """Under torchrun: join the process group (gloo on CPU, nccl on CUDA) and return this rank's
    device (cuda:LOCAL_RANK). Otherwise a single process on ``device``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size()), device


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


def _reduce(values: list[float], op, device: torch.device, d: Dist) -> list[float]:
    if d.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=op)
    return t.tolist()


def reduce_sum(values: list[float], device: torch.device, d: Dist) -> list[float]:
    return _reduce(values, dist.ReduceOp.SUM, device, d)


def reduce_max(values: list[float], device: torch.device, d: Dist) -> list[float]:
    return _reduce(values, dist.ReduceOp.MAX, device, d)


def shutdown(d: Dist) -> None:
    if d.world_size > 1:
        dist.destroy_process_group()
