"""Multi-process evaluation under `torchrun`, on one machine or several (`--nnodes N`): ranks share
the work by item and rank 0 scores and reports once all ranks are done.

Only rank 0 opens the output cache (`--cache`, default <output-dir>/cache.sqlite): SQLite's WAL mode
needs memory shared between its writers, so it is safe on one host only and never on a network
filesystem. Every other rank N writes to a store of its own, a local SQLite file beside its own cache
path, `<cache>.rank<N>` (e.g. results/runs/cache.sqlite.rank1, under that rank's working folder), and
sends what it stored to rank 0 (gloo) at points every rank reaches: at start-up (what it stored before
a crash) and after each system × task (`merge`). Rank 0 puts the records into the cache (a failure
never replaces an ok output), then the rank deletes them from its store: a store holds only what rank 0
does not have yet. Which outputs are missing is decided from rank 0's cache alone and
broadcast (`todo`), so a run resumed on another number of ranks or nodes computes only what is
missing. Ranks other than 0 never write the run directory.

What a killed rank loses: its batch in flight. What it stored and had not sent yet stays in its store
and is merged when that rank runs again on that machine; rank 0 also merges the stores it can see of
ranks the current run lacks (`<cache>.rank<N>` with N >= the world size: one machine, fewer ranks).
Records of a machine that never rejoins are computed again.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op, except that leftover merge."""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

if TYPE_CHECKING:
    from bench.cache import OutputCache

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


def store_path(cache_path: str | Path, rank: int) -> Path:
    """Where `rank` keeps its outputs: the cache itself on rank 0, `<cache>.rank<N>` on rank N."""
    return Path(cache_path) if rank == 0 else Path(f"{cache_path}.rank{rank}")


def open_cache(cache_path: str | Path, rank: int, size: int) -> "OutputCache":
    """This rank's output store (the cache on rank 0), once what every rank's store held before (a
    killed run) is merged into the cache. A collective under torchrun."""
    from bench.cache import OutputCache

    cache = OutputCache(store_path(cache_path, rank))
    if rank == 0:  # stores of ranks this run lacks that rank 0 can see (the same machine, fewer ranks)
        path = Path(cache_path)
        for p in sorted(path.parent.glob(f"{glob.escape(path.name)}.rank*")):
            m = re.fullmatch(re.escape(path.name) + r"\.rank(\d+)", p.name)
            if m and int(m.group(1)) >= size:
                left = OutputCache(p)
                cache.put_many(left.records())
                left.close()
                for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                    f.unlink(missing_ok=True)
    merge(cache, rank, size)
    return cache


def merge(cache: "OutputCache", rank: int, size: int) -> None:
    """Every rank's stored records into rank 0's cache; each rank then deletes them from its own store.
    A collective (every rank calls it at the same point); a no-op in one process."""
    if size == 1:
        return
    import torch.distributed as td

    mine = cache.records() if rank > 0 else []
    got: list | None = [None] * size if rank == 0 else None
    td.gather_object(mine, got, dst=0)
    if rank == 0:
        records = [r for recs in got[1:] for r in recs]
        if records:
            cache.put_many(records)
    td.barrier()  # committed on rank 0 before any rank lets go of its copy
    if mine:
        cache.delete(r.key for r in mine)


def todo(cache: "OutputCache", slots: Sequence[T], rank: int, size: int) -> list[T]:
    """This rank's share of the `slots` (each with a `key`) that rank 0's cache lacks, decided by rank
    0 and broadcast; rank 0 also keeps the slots already done, which `runner.generate` counts as
    cached. A collective; in one process, all the slots (`generate` skips what is cached)."""
    if size == 1:
        return list(slots)
    done = broadcast(cache.done_keys(s.key for s in slots) if rank == 0 else None)
    mine = {s.key for s in shard([s for s in slots if s.key not in done], rank, size)}
    return [s for s in slots if s.key in mine or (rank == 0 and s.key in done)]
