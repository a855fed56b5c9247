"""Processes, devices, signals and parallel wrapping for training: everything that differs between 1 CPU process
and 1000 GPUs, so that train.py reads the same for both.

  Dist            rank, world size, device; a process group (gloo on CPU, nccl on GPU) when there is more than one
                  process, or for FSDP
  StopFlag        SIGTERM / SIGUSR1 -> every rank stops after the same optimizer step
  set_determinism seeds and deterministic kernels
  wrap            DDP around the loss module, or FSDP2 (fully_shard) on each block and then the whole network
  full_state      unsharded state dicts keyed by parameter name, so checkpoints move between strategies and sizes
"""

from __future__ import annotations

import os
import random
import signal
import sys
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


class Dist:
    """Rank, world size and device of this process; a process group only when there is more than one process
    (or FSDP, which needs one)."""

    def __init__(self, need_group: bool):
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.group = False
        if self.world > 1 or need_group:
            if "MASTER_ADDR" in os.environ:
                dist.init_process_group(self.backend, device_id=self.device if self.device.type == "cuda" else None)
            else:  # plain `python -m ...` with FSDP: a 1-process group in memory
                dist.init_process_group(self.backend, store=dist.HashStore(), rank=0, world_size=1)
            self.group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.group and self.world > 1:
            dist.all_reduce(value)
        return value

    def all_gather(self, obj) -> list:
        """`obj` of every rank, in rank order (a collective)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.group and self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.group:
            dist.destroy_process_group()


class StopFlag:
    """SIGTERM / SIGUSR1 -> stop after the current optimizer step (all ranks agree, see should_stop)."""

    def __init__(self):
        self.signum = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        self.signum = signum

    def should_stop(self, d: Dist) -> bool:
        """True on every rank if any rank got a signal (a collective: every rank calls it each step)."""
        flag = torch.tensor([float(self.signum)], device=d.device)
        return bool(d.all_sum(flag).item() > 0)


def deterministic_kernels(on: bool = True) -> None:
    """Deterministic kernels on or off (training and evaluation share this one switch)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
        # Determinism does not need uninitialized memory filled with NaN (a debugging aid that made the default
        # UNet ~2x slower on CPU).
        torch.utils.deterministic.fill_uninitialized_memory = False
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(on)
    else:  # the same switch without also configuring the compiler, whose import costs ~4 s per process
        torch._C._set_deterministic_algorithms(on)


def set_determinism(seed: int, rank: int, deterministic: bool) -> None:
    if deterministic:
        deterministic_kernels(True)
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)  # noqa: NPY002 - the global RNG, for any code that uses it
    torch.manual_seed(seed)  # the same on every rank: identical initial weights


def wrap(net: nn.Module, loss_fn: nn.Module, strategy: str, d: Dist) -> nn.Module:
    """The module to call for the loss: `loss_fn` (which holds `net`), under DDP for several processes; for FSDP
    `net` is sharded in place (fully_shard on each block, then on the whole network)."""
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(d.device.type, (d.world,))
        units = net.fsdp_units() if hasattr(net, "fsdp_units") else []
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(net, mesh=mesh)
        return loss_fn
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [d.device.index] if d.device.type == "cuda" else None
        return DDP(loss_fn, device_ids=ids)
    return loss_fn


def no_sync(model: nn.Module, net: nn.Module, strategy: str, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if strategy == "fsdp" and hasattr(net, "set_requires_gradient_sync"):
        net.set_requires_gradient_sync(last)
        return nullcontext()
    if not last and hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return nullcontext()


def full_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts keyed by parameter name (a collective: every rank calls it), so
    a checkpoint from N processes with DDP or FSDP loads into 1 process and vice versa."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(net, options=opts), get_optimizer_state_dict(net, optimizer, options=opts)


def load_full_state(net: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(net, model_sd, options=opts)
    set_optimizer_state_dict(net, optimizer, optim_sd, options=opts)
