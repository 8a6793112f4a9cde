"""Process-group helpers: the same loop runs alone or under ``torchrun --nproc_per_node N``.

``torchrun`` describes the job through its standard variables (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``); :func:`init_distributed` reads only those, joins the
group (nccl on GPUs, gloo on CPUs) and returns ``(rank, world_size)``. Only rank 0 writes
files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (or without a process group): the process that writes files."""
    return dist_info()[0] == 0


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """Join the torchrun process group if this process was started by torchrun.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'}
        'cpu' forces gloo; otherwise nccl is used when CUDA is available.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist_info()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if dist_info()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(pref: str = "auto") -> torch.device:
    """The training device: CUDA (this rank's GPU) when available and allowed, else CPU."""
    if pref == "cpu" or not torch.cuda.is_available():
        if pref == "cuda":
            from medlens.errors import ConfigError

            raise ConfigError("engine.device: cuda requested but no CUDA device is available (use auto or cpu)")
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())
