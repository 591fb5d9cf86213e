"""Multi-process evaluation under `torchrun`: ranks share the work by item, write to the same
SQLite cache (WAL mode; every batch one short transaction), and rank 0 scores and reports once all
ranks are done. Without torchrun (WORLD_SIZE unset) everything here is a no-op."""
from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size), initialising the process group (gloo: CPU-safe) under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("gloo")
        return td.get_rank(), size
    return 0, 1


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """Every size-th element starting at rank: a deterministic split that covers everything once."""
    return list(items[rank::size])


def barrier() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as td

        td.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return [obj]
    import torch.distributed as td

    out: list = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def finish() -> None:
    """Tear the process group down on every rank once the last collective is done: a rank that
    leaves with it alive can abort at exit ("terminate called without an active exception")."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
