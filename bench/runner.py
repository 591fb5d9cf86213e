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
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from bench import conditions as cond_mod
from bench.analysis import wer_bucket_rows
from bench.cache import OutputCache, Record, cache_key
from bench.profile import Profile
from bench.record import describe_error
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
    profile: Profile = field(default_factory=Profile)  # where the time went (bench/profile.py)


def gen_config(max_new_tokens: int, stop: Sequence[str] = ()) -> dict:
    """The generation config in an output's cache key (and what the system is asked for)."""
    conf: dict = {"max_new_tokens": int(max_new_tokens), "greedy": True}
    if stop:  # (absent when there are none: the keys of tasks without stop strings stay what they were)
        conf["stop"] = list(stop)
    return conf


def task_gen_config(task: Task, max_new_tokens: int) -> dict:
    """A task's generation config in a run whose cap is `max_new_tokens`: the task's own answer length
    where it declares one (the run's cap where that is smaller) and its stop strings."""
    own = task.max_new_tokens
    return gen_config(max_new_tokens if own is None else min(own, max_new_tokens), task.stop)


def slots_for(fingerprint: str, task: Task, items: Sequence[Item], conditions: Sequence[str],
              gconf: dict) -> list[Slot]:
    return [Slot(it, c, cache_key(fingerprint, task.name, task.version, it.id, c, gconf))
            for c in conditions for it in items]


def score_gconf(task: Task, gconf: dict, ref_fp: str | None) -> dict:
    """The generation config of a task's outputs: a scoring task's outputs also depend on whose
    answers were scored (the reference system's fingerprint)."""
    return {**gconf, "mode": "score", "target": ref_fp} if task.mode == "score" else gconf


def _call(system: System, requests: list[Request], targets: list[str] | None) -> list[Generation]:
    if targets is None:
        return system.generate_batch(requests)
    t0 = time.perf_counter()
    scored = system.score_batch(list(zip(requests, targets)))
    per = (time.perf_counter() - t0) / max(len(requests), 1)
    return [Generation(text=t, tokens=len(lp.logprobs), nll=lp.nll, seconds={"score": per})
            for t, lp in zip(targets, scored)]


def _generate_batch(system: System, batch: list[Slot], task: Task, targets: dict[str, str | None] | None,
                    profile: Profile, gconf: dict) -> list[tuple[Generation | None, str | None]]:
    """Generate (or, for a scoring task, score the `targets`) for a batch; on error, retry one by one
    so that a bad item fails alone. `profile` gets the audio stage and the model call's stages; each
    request asks for the answer length of `gconf` (the cache key's)."""
    requests, results, idx, wanted = [], [None] * len(batch), [], []
    t_audio = time.perf_counter()
    for i, s in enumerate(batch):
        try:
            if targets is not None and targets.get(s.item.id) is None:
                raise ValueError(f"no reference answer from {task.reference_system!r} to score")
            it = cond_mod.apply(s.condition, s.item)
            requests.append(Request(it.turn, it.history, it.instruction, task.transcript_only,
                                    gconf.get("max_new_tokens"), tuple(gconf.get("stop", ()))))
            wanted.append(targets[s.item.id] if targets is not None else None)
            idx.append(i)
        except Exception as e:  # the condition could not be applied (bad audio...) or no target
            results[i] = (None, describe_error(e))
    profile.add(system.name, "audio", time.perf_counter() - t_audio)
    to_score = wanted if targets is not None else None  # the answers to score, in request order
    t_call = time.perf_counter()
    try:
        gens = _call(system, requests, to_score) if requests else []
        if len(gens) != len(requests):
            raise RuntimeError(f"{system.name} returned {len(gens)} outputs for {len(requests)} requests")
        for i, g in zip(idx, gens):
            results[i] = (g, None)
    except Exception:
        if len(requests) == 1:
            results[idx[0]] = (None, describe_error(sys.exc_info()[1]))
        else:
            for k, (i, r) in enumerate(zip(idx, requests)):
                try:
                    results[i] = (_call(system, [r], None if to_score is None else [to_score[k]])[0], None)
                except Exception as e:
                    results[i] = (None, describe_error(e))
    profile.add_call(system.name, (r[0] for r in results if r is not None), time.perf_counter() - t_call)
    return results


def generate(system: System, task: Task, slots: Sequence[Slot], cache: OutputCache, gconf: dict,
             batch_size: int, stats: GenStats, progress: bool = True,
             targets: dict[str, str | None] | None = None) -> None:
    """Produce the outputs of `slots` that the cache does not hold yet (for a scoring task, the
    scores of `targets`, item id → reference answer)."""
    done = cache.done_keys(s.key for s in slots)
    todo = [s for s in slots if s.key not in done]
    stats.cached += len(slots) - len(todo)
    if not todo:
        return
    fp = system.fingerprint()
    gc = json.dumps(gconf, sort_keys=True)
    copy = lambda s, r: Record(s.key, system.name, fp, task.name, task.version, s.item.id,  # noqa: E731
                               s.condition, gc, r.status, r.generation, r.error)
    twins: dict[str, list[Slot]] = {}
    if not getattr(system, "hears_audio", True):
        todo, twins, stored = _heard_once(todo, cache.get_many, fp, task, gconf)
        cache.put_many(copy(s, r) for s, r in stored)
        stats.cached += len(stored)
    bar = tqdm(total=len(todo), desc=f"{system.name} · {task.name}", unit="item", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, leave=False)
    t_run = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        t0 = time.perf_counter()
        results = _generate_batch(system, batch, task, targets, stats.profile, gconf)
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
            records += [copy(t, records[-1]) for t in twins.get(s.key, ())]
            stats.cached += len(twins.get(s.key, ()))
        with stats.profile.time(system.name, "cache"):
            cache.put_many(records)
        bar.update(len(batch))
    stats.wall_seconds += time.perf_counter() - t_run
    bar.close()


def _heard_once(todo: list[Slot], stored, fp: str, task: Task, gconf: dict):
    """For a system that never hears the audio (`System.hears_audio` False: it reads the transcript),
    an item under a condition that changes only the audio gets the item's clean output. Returns the
    slots to generate (one an item and kind of condition: the clean one where asked for, else the
    first), {its key: the slots that take its output} and [(slot, stored clean record)] of those whose
    clean output the cache (`stored`: keys → records) already holds."""
    keys = [cache_key(fp, task.name, task.version, s.item.id, "clean", gconf)  # (None: a condition on the words)
            if cond_mod.audio_only(s.condition) else None for s in todo]
    have = {k: r for k, r in stored([k for k in keys if k]).items() if r.status == "ok"}
    lead: dict[str, Slot] = {}
    for s, k in sorted(zip(todo, keys), key=lambda p: p[0].condition != "clean"):  # clean leads where asked for
        if k:
            lead.setdefault(k, s)
    keep, twins, copied = [], {}, []
    for s, k in zip(todo, keys):
        if k in have:
            copied.append((s, have[k]))
        elif k is None or lead[k] is s:
            keep.append(s)
        else:
            twins.setdefault(lead[k].key, []).append(s)
    return keep, twins, copied


def reference_answers(cache: OutputCache, ref_fp: str, task: Task, items: Sequence[Item], gconf: dict) -> dict[str, str | None]:
    """The reference system's clean answers to a scoring task's items (item id → text or None)."""
    recs = read_records(cache, slots_for(ref_fp, task, items, ["clean"], gconf))
    return {it.id: (r.generation.text if (r := recs[("clean", it.id)]) and r.generation else None) for it in items}


def read_records(cache: OutputCache, slots: Iterable[Slot]) -> dict[tuple[str, str], Record | None]:
    """(condition, item id) → stored record (ok or failed), None where nothing is stored."""
    slots = list(slots)
    got = cache.get_many(s.key for s in slots)
    return {(s.condition, s.item.id): got.get(s.key) for s in slots}


def score_all(tasks: dict[str, tuple[Task, list[Item]]], conditions_for,
              fingerprints: dict[str, str], cache: OutputCache, max_new_tokens: int,
              ref_fingerprints: dict[str, str] | None = None, baselines: Sequence[str] = (),
              bucket_systems: Sequence[str] = ()) -> tuple[list[dict], dict]:
    """Rows for every task × its conditions (`conditions_for(task name)`) × system, from the cache
    alone (the outputs of a run whose cap was `max_new_tokens`), with paired differences against
    `baselines` and WER-bucket rows by the first of `bucket_systems` present; also the per-item records
    {(task, condition): {system: {item id: Record | None}}}."""
    rows: list[dict] = []
    per_item: dict = {}
    for tname, (task, items) in tasks.items():
        task_gconf = score_gconf(task, task_gen_config(task, max_new_tokens),
                                 (ref_fingerprints or {}).get(task.reference_system))
        conditions = conditions_for(tname)
        recs = {sname: read_records(cache, slots_for(fp, task, items, conditions, task_gconf))
                for sname, fp in fingerprints.items()}
        for c in conditions:
            by_system = {s: {it.id: r[(c, it.id)] for it in items} for s, r in recs.items()}
            gens = {s: {i: (r.generation if r else None) for i, r in o.items()} for s, o in by_system.items()}
            rows.extend(score_task(task, c, items, gens, baselines))
            rows.extend(wer_bucket_rows(task, c, items, gens, bucket_systems))
            per_item[(tname, c)] = by_system
    return rows, per_item


def describe_failures(failures: Sequence[tuple[str, str, str, str]], limit: int = 5) -> str:
    """A few lines on a run's failed items: (system, task, item id, reason) each."""
    if not failures:
        return ""
    lines = [f"{len(failures)} item(s) failed (recorded with their reason; the run went on):"]
    lines += [f"  {s} · {t} · {i}: {r}" for s, t, i, r in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more (see outputs.jsonl)")
    return "\n".join(lines)
