"""torchrun, read in one place. `torchrun --nproc_per_node=N -m alexnet train ...` sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR/PORT; a plain `alexnet train` has none of them and runs as rank 0 of 1.
NCCL on CUDA, gloo on CPU. Metrics are reduced as sums, so every rank ends with the exact global figures."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    restart_count: int = 0  # torchrun's elastic restarts so far (TORCHELASTIC_RESTART_COUNT)
    launched: bool = False  # started by torchrun: a process group even for one process (NCCL runs as it would)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls) -> "DistEnv":
        env = os.environ
        return cls(rank=int(env.get("RANK", 0)), local_rank=int(env.get("LOCAL_RANK", 0)),
                   world_size=int(env.get("WORLD_SIZE", 1)),
                   restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
                   launched="TORCHELASTIC_RUN_ID" in env)


def init(env: DistEnv, device: torch.device) -> None:
    if not env.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torchrun's agent keeps one store across elastic restarts; without a per-attempt prefix a restarted rank
    # can read the address a dead rank published (seen with gloo on torch 2.14: "Connection refused").
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"alexnet/attempt_{env.restart_count}", store)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank,
                            world_size=world_size, device_id=device if device.type == "cuda" else None)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In place, across ranks; a no-op in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_sum_async(tensor: torch.Tensor):
    """Starts an in-place sum across ranks; returns the handle to `wait()` on, or None in a single process."""
    return dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True) if dist.is_initialized() else None


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any (used to stop all ranks at the same step)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    if not dist.is_initialized():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out


def all_gather_object(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; [obj] in a single process."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
