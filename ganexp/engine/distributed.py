"""Several processes, one run: the process group, and the few collectives the loop needs.

Two launchers start the processes: ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address) and the submitit launcher with ``hydra.launcher.tasks_per_node`` or
``nodes`` above 1 (whose tasks get the same variables from ``submitit.helpers``). The backend is
NCCL for CUDA and gloo otherwise; a second gloo group carries the host-side agreements (stop
signals, non-finite checks, checkpoint states), so they never wait on the GPU. With one process
:func:`current` is a :class:`World` of size 1 whose collectives return their input.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ganexp.data.spec import Shard
from ganexp.errors import ConfigError


def launched_world_size() -> int:
    """The number of processes the launcher started for this run (1 without one)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        return submitit.JobEnvironment().num_tasks
    return 1


@dataclass(frozen=True)
class World(Shard):
    """This process's place among the processes of a run."""

    local_rank: int = 0
    control: Any = None  # the gloo group for host-side agreement

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, samples and the W&B run."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's own GPU (by local rank) when training on CUDA."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    @staticmethod
    def prepare(module: nn.Module, sync_batchnorm: bool) -> nn.Module:
        """``module`` with its batch norms synchronized across processes (norm.sync_batchnorm),
        so that they normalize over the whole batch as one process would."""
        if not sync_batchnorm:
            return module
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def parallel(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped in DistributedDataParallel. Buffers are not re-broadcast before
        every forward (``forward_sync_buffers=False``): D runs several times per backward, and
        spectral norm's vectors are updated in place there; they stay equal across processes
        anyway, because every process starts from the same ones and sees the same weights."""
        device = next(module.parameters()).device
        ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)

    def max(self, value: int) -> int:
        """The largest of every process's ``value``."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.control)
        return int(tensor)

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` averaged over the processes, in place, on its own device."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.size
        return tensor

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


_world = World()


def current() -> World:
    return _world


def start(device_type: str) -> World:
    """Join the process group of this run (once; later calls return the same world).

    ``device_type``: the training device's type; CUDA trains over NCCL, anything else over gloo.
    """
    global _world
    if _world.distributed or launched_world_size() == 1:
        return _world
    if device_type == "mps":
        raise ConfigError("device", "mps", "several processes need cuda or cpu (gloo)")
    if "WORLD_SIZE" not in os.environ:  # a submitit task: its rank and address from Slurm's
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:  # torchrun sets 1; share the cores otherwise
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if device_type == "cuda" else None
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank, control)
    atexit.register(dist.destroy_process_group)
    return _world
