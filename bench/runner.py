"""The runner: for each task × condition × system, generate what is not cached yet, in batches,
committing each batch; then score everything from the cache.

Resumable by construction: a killed run loses at most the batch in flight, and rerunning the same
configuration skips every output already stored. A failing item is stored as failed with its
reason and the run goes on.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from bench import conditions as cond_mod
from bench.cache import OutputCache, Record, cache_key
from bench.scoring import score_task
from bench.types import Generation, Item, Request, System, Task


@dataclass
class Slot:
    """One output to produce or read: an item under a condition for a system."""

    item: Item
    condition: str
    key: str


@dataclass
class GenStats:
    generated: int = 0
    cached: int = 0
    failed: int = 0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)  # system, task, item, reason


def gen_config(max_new_tokens: int) -> dict:
    return {"max_new_tokens": int(max_new_tokens), "greedy": True}


def slots_for(fingerprint: str, task: Task, items: Sequence[Item], conditions: Sequence[str],
              gconf: dict) -> list[Slot]:
    return [Slot(it, c, cache_key(fingerprint, task.name, task.version, it.id, c, gconf))
            for c in conditions for it in items]


def _describe(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500]


def _generate_batch(system: System, batch: list[Slot], transcript_only: bool = False) -> list[tuple[Generation | None, str | None]]:
    """Generate for a batch; on error, retry one by one so a bad item fails alone."""
    requests, results, idx = [], [None] * len(batch), []
    for i, s in enumerate(batch):
        try:
            it = cond_mod.apply(s.condition, s.item)
            requests.append(Request(it.turn, it.history, it.instruction, transcript_only))
            idx.append(i)
        except Exception as e:  # the condition could not be applied (bad audio...)
            results[i] = (None, _describe(e))
    try:
        gens = system.generate_batch(requests) if requests else []
        if len(gens) != len(requests):
            raise RuntimeError(f"{system.name} returned {len(gens)} outputs for {len(requests)} requests")
        for i, g in zip(idx, gens):
            results[i] = (g, None)
    except Exception:
        if len(requests) == 1:
            results[idx[0]] = (None, _describe(sys.exc_info()[1]))
        else:
            for i, r in zip(idx, requests):
                try:
                    results[i] = (system.generate_batch([r])[0], None)
                except Exception as e:
                    results[i] = (None, _describe(e))
    return results


def generate(system: System, task: Task, slots: Sequence[Slot], cache: OutputCache, gconf: dict,
             batch_size: int, stats: GenStats, progress: bool = True) -> None:
    """Produce the outputs of `slots` that the cache does not hold yet."""
    done = cache.done_keys(s.key for s in slots)
    todo = [s for s in slots if s.key not in done]
    stats.cached += len(slots) - len(todo)
    if not todo:
        return
    fp = system.fingerprint()
    gc = json.dumps(gconf, sort_keys=True)
    bar = tqdm(total=len(todo), desc=f"{system.name} · {task.name}", unit="item", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, leave=False)
    t_run = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        t0 = time.perf_counter()
        results = _generate_batch(system, batch, task.transcript_only)
        stats.model_seconds += time.perf_counter() - t0
        records = []
        for s, (g, err) in zip(batch, results):
            records.append(Record(s.key, system.name, fp, task.name, task.version, s.item.id, s.condition,
                                  gc, "ok" if g is not None else "failed", g, err))
            if g is None:
                stats.failed += 1
                stats.failures.append((system.name, task.name, s.item.id, err or "unknown error"))
            else:
                stats.generated += 1
        cache.put_many(records)
        bar.update(len(batch))
    stats.wall_seconds += time.perf_counter() - t_run
    bar.close()


def read_records(cache: OutputCache, slots: Iterable[Slot]) -> dict[tuple[str, str], Record | None]:
    """(condition, item id) → stored record (ok or failed), None where nothing is stored."""
    slots = list(slots)
    got = cache.get_many(s.key for s in slots)
    return {(s.condition, s.item.id): got.get(s.key) for s in slots}


def score_all(tasks: dict[str, tuple[Task, list[Item]]], conditions: Sequence[str],
              fingerprints: dict[str, str], cache: OutputCache, gconf: dict) -> tuple[list[dict], dict]:
    """Rows for every task × condition × system, from the cache alone; also the per-item records
    {(task, condition): {system: {item id: Record | None}}}."""
    rows: list[dict] = []
    per_item: dict = {}
    for tname, (task, items) in tasks.items():
        recs = {sname: read_records(cache, slots_for(fp, task, items, conditions, gconf))
                for sname, fp in fingerprints.items()}
        for c in conditions:
            by_system = {s: {it.id: r[(c, it.id)] for it in items} for s, r in recs.items()}
            rows.extend(score_task(task, c, items, {s: {i: (r.generation if r else None) for i, r in o.items()}
                                                    for s, o in by_system.items()}))
            per_item[(tname, c)] = by_system
    return rows, per_item


def describe_failures(stats: GenStats, limit: int = 5) -> str:
    if not stats.failures:
        return ""
    lines = [f"{stats.failed} item(s) failed (recorded with their reason; the run went on):"]
    lines += [f"  {s} · {t} · {i}: {r}" for s, t, i, r in stats.failures[:limit]]
    if len(stats.failures) > limit:
        lines.append(f"  ... and {len(stats.failures) - limit} more (see outputs.jsonl)")
    return "\n".join(lines)


def print_exc_short() -> None:
    traceback.print_exc(limit=2, file=sys.stderr)
