"""torch.distributed helpers: start from torchrun's environment, ask who we are, stop cleanly."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and shows progress."""
    return rank() == 0


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def init_from_env(device: Optional[str] = None) -> torch.device:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1) and return this rank's device.

    The backend is nccl for CUDA devices and gloo otherwise; each rank uses ``cuda:LOCAL_RANK``.
    Without torchrun (or with one process) nothing is initialised.
    """
    want_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if want_cuda else "gloo"
        if want_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    if want_cuda:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device())
    return torch.device(device or "cpu")


def shutdown() -> None:
    """Leave the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (``value`` itself in a single process)."""
    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def any_over_ranks(flag: torch.Tensor) -> bool:
    """Whether the 0-d bool ``flag`` is true on any rank (``flag`` itself in a single process)."""
    flag = flag.to(torch.int32)
    if is_distributed():
        dist.all_reduce(flag)
    return bool(flag)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``[W * B, ...]``: every rank's ``[B, ...]`` rows in rank order, on every rank (``tensor`` itself in one process).

    Gradients flow back to each rank's own rows (summed over the ranks that used them), so a loss that
    every rank computes identically on the gathered rows, with DDP averaging the gradients, steps
    exactly as one process on the whole batch. Every rank must pass the same shape.
    """
    if not is_distributed():
        return tensor
    if tensor.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
