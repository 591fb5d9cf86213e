"""The evaluator, the harness's library entry point: `evaluate(plan) -> RunResult`.

    from bench.evaluate import Plan, evaluate, score_run
    result = evaluate(Plan(systems=["text"], tasks=["spoken-qa"], limit=20))
    result.rows                                   # tidy rows (bench.report.ROW_FIELDS)
    result.outputs("text", "spoken-qa")           # item id → Generation (None: failed or missing)
    score_run(result.run_dir)                     # the same rows again, from stored outputs alone

One run: every name in the plan is validated (before any model loads) → the run directory and its
config.json → the scoring tasks' reference system answers first → every system × task × condition
generates what the cache lacks (items sharded over torchrun ranks) → rank 0 scores from the cache
alone → rows, tables, outputs.jsonl and report.html in the run directory. The CLI (`run`, `score`),
`perf`, the regression gate and the scripts are callers of this module.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.config import RunConfig, environment
from bench.types import Generation, Item, Task

Plan = RunConfig  # systems, tasks, conditions, limits, generation config, cache, output dir


@dataclass
class RunResult:
    """What a run produced: its rows, every stored record per (task, condition) and system, the tasks
    with their items, the run's metadata (config.json) and directory, and the generation counts."""

    run_dir: Path
    rows: list[dict]
    records: dict  # {(task, condition): {system: {item id: Record | None}}}
    tasks: dict[str, tuple[Task, list[Item]]]
    meta: dict
    counts: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)  # (system, task, item id, reason) of this run's new failures
    primary: bool = True  # False on torchrun ranks other than 0, which generate but do not score

    def outputs(self, system: str, task: str, condition: str = "clean") -> dict[str, Generation | None]:
        recs = self.records.get((task, condition), {}).get(system, {})
        return {i: (r.generation if r else None) for i, r in recs.items()}

    @property
    def n_failed(self) -> int:
        return sum(1 for by_sys in self.records.values() for recs in by_sys.values() for r in recs.values()
                   if r is None or r.generation is None)


def validate(plan: Plan) -> None:
    """Every system, task, condition and system argument of the plan exists (clear errors, nothing loaded)."""
    from bench.conditions import CONDITIONS
    from bench.plugins import check_system_args, systems, tasks

    if not plan.systems or not plan.tasks:
        raise ValueError("nothing to run: give --systems and --tasks, or a --suite")
    for name, system in plan.aliases.items():
        if name in systems().names():
            raise ValueError(f"{name}={system}: {name!r} is already a system's name; give the alias another one")
    for n in plan.systems + ([plan.judge] if plan.judge else []):
        systems().target(plan.aliases.get(n, n))
    for n in plan.tasks:
        tasks().target(n.partition(":")[0])
    for n in plan.conditions + plan.sweep_conditions:
        CONDITIONS.target(n)
    for name, args in plan.system_args.items():
        check_system_args(plan.aliases.get(name, name), args)


def build_tasks(plan: Plan) -> dict[str, tuple[Task, list[Item]]]:
    """The plan's tasks with their items (manifests are read here: a malformed one fails first)."""
    from bench.plugins import build_task, task_data_kwargs

    return {name: (t := build_task(name, **task_data_kwargs(name, plan.data_dir)), t.items(plan.limit))
            for name in plan.tasks}


def load_plan(run_dir: str | Path) -> tuple[Plan, dict]:
    """(plan, config.json) of a run directory. Runs written before per-system arguments existed kept
    them as top-level options (`asr`, `e2e`, ...): those are read into `system_args` through the
    systems' declared aliases."""
    from bench.plugins import legacy_system_args

    d = Path(run_dir)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d}: not a run directory (no config.json)")
    meta = json.loads((d / "config.json").read_text())
    saved = dict(meta["config"])
    if "system_args" not in saved:
        saved["system_args"] = legacy_system_args(saved)
    return RunConfig.from_dict(saved), meta


def _new_run_dir(output_dir: str, ident: str) -> Path:
    base = Path(output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{ident[:6]}"
    d, i = base, 1
    while d.exists():
        d, i = Path(f"{base}.{i}"), i + 1
    d.mkdir(parents=True)
    return d


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def evaluate(plan: Plan, run_dir: str | Path | None = None, progress: bool = True, write: bool = True,
             log: Callable[[str], None] = _log, built: dict | None = None) -> RunResult:
    """Run `plan`: generate what the cache lacks, then score. `run_dir`: continue that run (its own
    config.json is kept; see `load_plan`); else a new directory under `plan.output_dir`. `write`:
    also write tables, outputs.jsonl and the report (rows.jsonl and config.json are always written).
    `built`: already built systems by name (loaded and warmed, as `perf` has them), used instead of
    building them from the registry. Under torchrun every rank calls this; ranks other than 0 return
    a result with `primary` False after generating."""
    from bench import dist
    from bench.assets import AssetError
    from bench.cache import OutputCache
    from bench.plugins import Context, build_system
    from bench.runner import GenStats, gen_config, generate, reference_answers, score_gconf, slots_for

    validate(plan)
    tasks = build_tasks(plan)
    rank, world = dist.world()
    if run_dir is not None:
        run_dir = Path(run_dir)
        meta = json.loads((run_dir / "config.json").read_text())
    else:
        run_dir = dist.broadcast(_new_run_dir(plan.output_dir, plan.identity()) if rank == 0 else None)
        # a copy: what the run was asked, never changed by what happens to it (skips are recorded apart)
        meta = {"config": copy.deepcopy(asdict(plan)), **environment(),
                "cache_path": str(plan.cache_path().resolve()), "world_size": world}
    meta["status"] = "running"

    def save_meta() -> None:
        if rank == 0:
            (run_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))

    save_meta()
    if rank == 0:
        log(f"run directory: {run_dir}" + (f" ({world} processes)" if world > 1 else ""))
    progress = progress and rank == 0
    ctx = Context(**plan.system_options())
    gconf = gen_config(plan.max_new_tokens)
    cache = dist.open_cache(plan.cache_path(), rank, world)  # on ranks > 0, their own store (bench.dist)
    stats = GenStats()
    built = dict(built or {})

    def system(name: str):
        if name not in built:
            with stats.profile.time(name, "build"):
                built[name] = build_system(plan.aliases.get(name, name), ctx, plan.system_args.get(name, {}))
                built[name].name = name
        return built[name]

    t0 = time.perf_counter()
    # Scoring tasks first need the reference system's own (clean) answers to score.
    ref_fps = {}
    for task, items in tasks.values():
        if task.mode == "score":
            ref = system(task.reference_system)
            ref_fps[task.reference_system] = ref.fingerprint()
            generate(ref, task, dist.todo(cache, slots_for(ref_fps[task.reference_system], task, items, ["clean"], gconf),
                                          rank, world), cache, gconf, plan.batch_size, stats, progress=progress)
            dist.merge(cache, rank, world)
    # every rank needs every reference answer: rank 0's, from the merged cache
    targets = dist.broadcast({tname: reference_answers(cache, ref_fps[task.reference_system], task, items, gconf)
                              for tname, (task, items) in tasks.items() if task.mode == "score"} if rank == 0 else None)
    meta["reference_fingerprints"] = ref_fps
    fingerprints, skipped = {}, {}
    for sname in plan.systems:
        try:
            fingerprints[sname] = system(sname).fingerprint()
        except (FileNotFoundError, AssetError) as e:
            if sname not in plan.optional_systems:
                raise
            log(f"skipping {sname} (optional in this suite): {e}")
            skipped[sname] = str(e)
            continue
        meta.setdefault("fingerprints", {})[sname] = fingerprints[sname]
        meta["skipped"] = skipped
        save_meta()
        for tname, (task, items) in tasks.items():
            tg = score_gconf(task, gconf, ref_fps.get(task.reference_system))
            slots = dist.todo(cache, slots_for(fingerprints[sname], task, items, plan.conditions_for(tname), tg), rank, world)
            generate(system(sname), task, slots, cache, tg, plan.batch_size, stats, progress=progress,
                     targets=targets.get(tname))
            dist.merge(cache, rank, world)  # this system × task's outputs of every rank into rank 0's cache
    meta["skipped"] = skipped
    cache.close()
    dist.barrier()  # rank 0 scores once every rank's outputs are in the cache (merged above)
    every = dist.gather(stats)  # a collective: every rank takes part before rank 0 goes on alone
    dist.finish()
    if rank > 0:
        return RunResult(run_dir, [], {}, tasks, meta, primary=False)
    counts = {k: sum(getattr(s, k) for s in every) for k in ("generated", "cached", "failed")}
    profile = every[0].profile.merge(s.profile for s in every[1:])  # every rank's generation time
    meta.update(status="finished", seconds=round(time.perf_counter() - t0, 2), counts=counts)
    save_meta()
    log(f"outputs: {counts['generated']} generated, {counts['cached']} from cache, {counts['failed']} failed "
        f"({meta['seconds']:.1f} s)")
    if plan.judge:  # one extra stage: the judge reads the stored answers of every system (resumable)
        from bench.judge import run_judge

        jcache = OutputCache(plan.cache_path())
        try:
            with profile.time(plan.judge, "judge"):
                meta["judge"] = run_judge(system(plan.judge), plan, tasks, fingerprints, jcache, gconf, progress)
        finally:
            jcache.close()
        save_meta()
        log(f"judge {plan.judge}: {meta['judge']['generated']} generated, {meta['judge']['cached']} from cache, "
            f"{meta['judge']['failed']} failed")
    result = _score(run_dir, plan, meta, fingerprints, tasks, write, profile)
    if counts["generated"] or counts["failed"]:  # (a fully cached rerun rewrites nothing)
        from bench.report import write_if_changed

        write_if_changed(run_dir / "profile.md", profile.markdown(f"Where the time went: run {run_dir.name}"))
    result.counts = counts
    result.failures = [f for s in every for f in s.failures]
    return result


def score_run(run_dir: str | Path, write: bool = True) -> RunResult:
    """Rows, tables and outputs of a run again from its stored outputs (its cache): no model is loaded."""
    plan, meta = load_plan(run_dir)
    plan.cache = meta.get("cache_path", plan.cache)
    if not meta.get("fingerprints"):
        raise ValueError(f"{run_dir}: the run recorded no system fingerprints, so it has no outputs to score")
    return _score(Path(run_dir), plan, meta, meta["fingerprints"], build_tasks(plan), write)


def _score(run_dir: Path, plan: Plan, meta: dict, fingerprints: dict, tasks: dict, write: bool,
           profile=None) -> RunResult:
    """Rows from the cache, then the files; `profile` (bench/profile.py) gets scoring and the report added."""
    from bench import report
    from bench.cache import OutputCache
    from bench.profile import HARNESS, Profile
    from bench.runner import gen_config, score_all

    profile = profile if profile is not None else Profile()

    from bench.scoring import task_signatures

    sigs = {n: s for n, (t, _) in tasks.items() if (s := task_signatures(t))}
    if sigs:  # how corpus metrics were computed (sacrebleu signatures, the WER normaliser), beside the results
        meta["metric_signatures"] = sigs
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    cache = OutputCache(plan.cache_path())
    t_score = time.perf_counter()
    try:
        rows, records = score_all(tasks, plan.conditions_for, fingerprints, cache, gen_config(plan.max_new_tokens),
                                  meta.get("reference_fingerprints"), plan.baselines, plan.bucket_systems)
        if plan.judge and meta.get("judge"):  # the judge's verdicts, from the cache alone
            from bench.judge import judge_rows

            rows.extend(judge_rows(plan, tasks, records, cache, meta["judge"]["fingerprint"]))
    finally:
        cache.close()
    profile.add(HARNESS, "scoring", time.perf_counter() - t_score)
    ident = plan.identity()
    for r in rows:
        r.update(run=run_dir.name, git_sha=meta.get("git_sha"), config_hash=ident)
    with profile.time(HARNESS, "report"):
        report.write_rows(run_dir, rows, asdict(plan))
        if write:
            from bench.html import write_report

            report.write_outputs(run_dir, records, {k: v[1] for k, v in tasks.items()})
            write_report(run_dir, rows, tasks, records, meta)
    return RunResult(run_dir, rows, records, tasks, meta)


def group_rows(result: RunResult, task: str, group_of: Callable[[Item], str | None], field_name: str,
               condition: str = "clean") -> list[dict]:
    """Every system's metrics of `task` on groups of its items (`group_of(item)`; None: left out), as
    rows with the group in `field_name` (e.g. "voice"): the breakdowns a table of one run can't show."""
    from bench.scoring import metric_labels, score_metric

    t, items = result.tasks[task]
    groups: dict[str, list[Item]] = {}
    for it in items:
        g = group_of(it)
        if g is not None:
            groups.setdefault(g, []).append(it)
    by_system = {s: result.outputs(s, task, condition) for s in result.records.get((task, condition), {})}
    rows = []
    for g, sub in sorted(groups.items()):
        for system, outputs in by_system.items():
            for metric in t.metrics:
                context = {metric.needs: by_system[metric.needs]} if metric.needs in by_system else {}
                res = score_metric(metric, sub, outputs, context)
                if res is not None:
                    rows.append({"system": system, "task": task, "task_version": t.version, "condition": condition,
                                 field_name: g, "metric": metric.name, "baseline": None,
                                 "higher_is_better": metric.higher_is_better, "timing": metric.timing,
                                 "primary": metric.name == t.primary_metric(), **metric_labels(metric), **res})
    return rows
