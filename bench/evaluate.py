"""The evaluator, the harness's library entry point: `evaluate(plan) -> RunResult`.

    from bench.evaluate import Plan, evaluate, score_run
    result = evaluate(Plan(systems=["text"], tasks=["spoken-qa"], limit=20))
    result.rows                                   # tidy rows (bench.report.ROW_FIELDS)
    result.outputs("text", "spoken-qa")           # item id → Generation (None: failed or missing)
    score_run(result.run_dir)                     # the same rows again, from stored outputs alone

One run, in named phases (lm-evaluation-harness's `simple_evaluate` / `evaluate` split):
  check       every name in the plan is validated, the tasks' items read (before any model loads)
  references  the scoring tasks' reference system answers first (a scoring task scores them)
  generation  every system × task × condition generates what the cache lacks (items sharded over
              torchrun ranks)
  judge       an optional judge reads every system's stored answers
  scoring     rank 0 scores from the cache alone
  report      rows, tables, outputs.jsonl and report.html in the run directory
The run record (`config.json`, bench/record.py) says running, then finished, or failed with the error.
The CLI (`run`, `score`), `perf`, the regression gate and the scripts are callers of this module.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench import dist
from bench.config import Plan
from bench.record import RunLog, RunRecord, new_record, read_record
from bench.types import TOPLINE, Generation, Item, Task

if TYPE_CHECKING:
    from bench.cache import OutputCache
    from bench.plugins import Context
    from bench.runner import GenStats

__all__ = ["Plan", "RunResult", "evaluate", "score_run", "load_plan", "validate", "build_tasks", "group_rows"]


@dataclass
class RunResult:
    """What a run produced: its rows, every stored record per (task, condition) and system, the tasks
    with their items, the run record (config.json) and directory, and the generation counts."""

    run_dir: Path
    rows: list[dict]
    records: dict  # {(task, condition): {system: {item id: Record | None}}}
    tasks: dict[str, tuple[Task, list[Item]]]
    record: RunRecord
    counts: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)  # (system, task, item id, reason) of this run's new failures
    primary: bool = True  # False on torchrun ranks other than 0, which generate but do not score

    @property
    def meta(self) -> dict:
        """The run record as config.json holds it."""
        return self.record.to_dict()

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
    if unknown := sorted(set(plan.limits) - set(plan.tasks)):
        raise ValueError(f"limits names tasks the plan does not run: {', '.join(unknown)} (tasks: {', '.join(plan.tasks)})")
    for n in plan.conditions + plan.sweep_conditions:
        CONDITIONS.target(n)
    for name, args in plan.system_args.items():
        check_system_args(plan.aliases.get(name, name), args)


def build_tasks(plan: Plan) -> dict[str, tuple[Task, list[Item]]]:
    """The plan's tasks with their items (manifests are read here: a malformed one fails first), each
    with its roles bound to the run's systems (`bind_roles`)."""
    from bench.plugins import build_task, task_data_kwargs

    return {name: (t := bind_roles(build_task(name, **task_data_kwargs(name, plan.data_dir)), plan.roles(), name),
                   t.items(plan.limit_for(name)))
            for name in plan.tasks}


def bind_roles(task: Task, roles: dict[str, str], name: str = "") -> Task:
    """A copy of `task` whose metrics' `needs` and whose `reference_system`, where they name a role
    (bench.types.TOPLINE), are bound to the system that plays it in this run (`Plan.roles`)."""
    bound = copy.copy(task)
    bound.metrics = tuple(replace(m, bound=roles[m.needs]) if m.needs in roles else m for m in task.metrics)
    if task.mode == "score":
        if task.reference_system in roles:
            bound.reference_system = roles[task.reference_system]
        elif task.reference_system == TOPLINE:
            raise ValueError(f"{name or task.name} scores the answers of the run's topline: name one (a suite's "
                             "`toplines`, or Plan(toplines=[...]))")
    return bound


def load_plan(run_dir: str | Path) -> tuple[Plan, RunRecord]:
    """(plan, record) of a run directory. Runs written before per-system arguments existed kept
    them as top-level options (`asr`, `e2e`, ...): those are read into `system_args` through the
    systems' declared aliases. Runs written before suites named `toplines` had one topline, the
    system whose answers their scoring tasks scored (`reference_fingerprints`)."""
    from bench.plugins import legacy_system_args

    record = read_record(run_dir)
    saved = dict(record.config)
    if "system_args" not in saved:
        saved["system_args"] = legacy_system_args(saved)
    if "toplines" not in saved:
        saved["toplines"] = list(record.reference_fingerprints)
    return Plan.from_dict(saved), record


def _new_run_dir(output_dir: str, ident: str) -> Path:
    base = Path(output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{ident[:6]}"
    d, i = base, 1
    while d.exists():
        d, i = Path(f"{base}.{i}"), i + 1
    d.mkdir(parents=True)
    return d


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class _Run:
    """One run in progress: what its phases share. `built`: the systems built so far, by name;
    `cache`: this rank's output store (rank 0: the cache), opened once for the whole run."""

    plan: Plan
    runlog: RunLog
    rank: int
    world: int
    progress: bool
    log: Callable[[str], None]
    built: dict
    ctx: Context
    stats: GenStats
    cache: OutputCache | None = None

    def system(self, name: str):
        if name not in self.built:
            from bench.plugins import build_system

            with self.stats.profile.time(name, "build"):
                self.built[name] = build_system(self.plan.aliases.get(name, name), self.ctx,
                                                self.plan.system_args.get(name, {}))
                self.built[name].name = name
        return self.built[name]

    def gconf(self, task: Task) -> dict:
        """The generation config of `task`'s outputs in this run (its answer length: the cache key's)."""
        from bench.runner import task_gen_config

        return task_gen_config(task, self.plan.max_new_tokens)

    def generate(self, system, task: Task, slots: list, gconf: dict, targets: dict | None = None) -> None:
        """This rank's share of what `slots` lack, then every rank's outputs into rank 0's cache."""
        from bench.runner import generate

        generate(system, task, dist.todo(self.cache, slots, self.rank, self.world), self.cache, gconf,
                 self.plan.batch_size, self.stats, progress=self.progress, targets=targets)
        dist.merge(self.cache, self.rank, self.world)


def evaluate(plan: Plan, run_dir: str | Path | None = None, progress: bool = True, write: bool = True,
             log: Callable[[str], None] = _log, built: dict | None = None) -> RunResult:
    """Run `plan`: generate what the cache lacks, then score. `run_dir`: continue that run (its own
    record is kept, its status set running again; see `load_plan`); else a new directory under
    `plan.output_dir`. `write`: also write tables, outputs.jsonl and the report (rows.jsonl and
    config.json are always written). `built`: already built systems by name (loaded and warmed, as
    `perf` has them), used instead of building them from the registry. Under torchrun every rank
    calls this; ranks other than 0 return a result with `primary` False after generating. An
    exception (Ctrl-C too) leaves the record failed with the error, and goes on up."""
    validate(plan)
    tasks = build_tasks(plan)
    run = _start(plan, run_dir, progress, log, built)
    run.runlog.update(decoding={name: run.gconf(task) for name, (task, _) in tasks.items()})
    with run.runlog.running():  # from here on an exception, Ctrl-C too, leaves the record failed
        run.cache = dist.open_cache(plan.cache_path(), run.rank, run.world)  # ranks > 0: their own store
        try:
            return _phases(run, tasks, write)
        finally:
            run.cache.close()


def _start(plan: Plan, run_dir, progress: bool, log, built: dict | None) -> _Run:
    """The run directory (new, or the one resumed) with its record, and what the phases share."""
    from bench.plugins import Context
    from bench.runner import GenStats

    rank, world = dist.world()
    if run_dir is not None:
        run_dir, record = Path(run_dir), read_record(run_dir)
    else:
        run_dir = dist.broadcast(_new_run_dir(plan.output_dir, plan.identity()) if rank == 0 else None)
        record = new_record(plan, plan.cache_path(), world)
    if rank == 0:
        log(f"run directory: {run_dir}" + (f" ({world} processes)" if world > 1 else ""))
    return _Run(plan, RunLog(run_dir, record, write=rank == 0), rank, world, progress and rank == 0, log,
                dict(built or {}), Context(**plan.system_options()), GenStats())


def _phases(run: _Run, tasks: dict, write: bool) -> RunResult:
    """references → generation → (every rank's tally) → judge → scoring → report."""
    t0 = time.perf_counter()
    targets = _references(run, tasks)
    fingerprints = _generation(run, tasks, targets)
    dist.barrier()  # rank 0 scores once every rank's outputs are in the cache (merged after each system × task)
    every = dist.gather(run.stats)  # a collective: every rank takes part before rank 0 goes on alone
    dist.finish()
    if run.rank > 0:
        return RunResult(run.runlog.run_dir, [], {}, tasks, run.runlog.record, primary=False)
    counts = {k: sum(getattr(s, k) for s in every) for k in ("generated", "cached", "failed")}
    profile = every[0].profile.merge(s.profile for s in every[1:])  # every rank's generation time
    run.runlog.update(seconds=round(time.perf_counter() - t0, 2), counts=counts)
    run.log(f"outputs: {counts['generated']} generated, {counts['cached']} from cache, {counts['failed']} failed "
            f"({run.runlog.record.seconds:.1f} s)")
    if run.plan.judge:
        _judge(run, tasks, fingerprints, profile)
    rows, records = _scoring(run.runlog, run.plan, fingerprints, tasks, run.cache, profile)
    _report(run.runlog, run.plan, rows, records, tasks, write, profile)
    if counts["generated"] or counts["failed"]:  # (a fully cached rerun rewrites nothing)
        from bench.report import write_if_changed

        run_dir = run.runlog.run_dir
        write_if_changed(run_dir / "profile.md", profile.markdown(f"Where the time went: run {run_dir.name}"))
    return RunResult(run.runlog.run_dir, rows, records, tasks, run.runlog.record, counts,
                     [f for s in every for f in s.failures])


def _references(run: _Run, tasks: dict) -> dict[str, dict[str, str | None]]:
    """The scoring tasks' reference answers: the reference system's own clean answers, generated
    first. Every rank gets all of them (rank 0's, from the merged cache): {task: {item id: text}}."""
    from bench.runner import reference_answers, slots_for

    ref_fps = {}
    for task, items in tasks.values():
        if task.mode == "score":
            ref_fps[task.reference_system] = fp = run.system(task.reference_system).fingerprint()
            run.generate(run.system(task.reference_system), task,
                         slots_for(fp, task, items, ["clean"], run.gconf(task)), run.gconf(task))
    run.runlog.update(reference_fingerprints=ref_fps)
    return dist.broadcast({name: reference_answers(run.cache, ref_fps[task.reference_system], task, items, run.gconf(task))
                           for name, (task, items) in tasks.items() if task.mode == "score"}
                          if run.rank == 0 else None)


def _generation(run: _Run, tasks: dict, targets: dict) -> dict[str, str]:
    """Every system × task × condition: what the cache lacks. An optional system that cannot be built
    (no checkpoint) is skipped, and the record says why. Returns {system: fingerprint} of those that ran."""
    from bench.assets import AssetError
    from bench.runner import score_gconf, slots_for

    fingerprints, skipped, refs = {}, {}, run.runlog.record.reference_fingerprints
    for sname in run.plan.systems:
        try:
            fingerprints[sname] = run.system(sname).fingerprint()
        except (FileNotFoundError, AssetError) as e:
            if sname not in run.plan.optional_systems:
                raise
            run.log(f"skipping {sname} (optional in this suite): {e}")
            skipped[sname] = str(e)
            continue
        run.runlog.update(fingerprints={**run.runlog.record.fingerprints, sname: fingerprints[sname]},
                          skipped=dict(skipped))
        for tname, (task, items) in tasks.items():
            gconf = score_gconf(task, run.gconf(task), refs.get(task.reference_system))
            slots = slots_for(fingerprints[sname], task, items, run.plan.conditions_for(tname), gconf)
            run.generate(run.system(sname), task, slots, gconf, targets.get(tname))
    run.runlog.update(skipped=skipped)
    return fingerprints


def _judge(run: _Run, tasks: dict, fingerprints: dict, profile) -> None:
    """The judge reads the stored answers of every system; its verdicts are cached like any output."""
    from bench.judge import run_judge

    with profile.time(run.plan.judge, "judge"):
        tally = run_judge(run.system(run.plan.judge), run.plan, tasks, fingerprints, run.cache, run.gconf,
                          run.progress)
    run.runlog.update(judge=tally)
    run.log(f"judge {run.plan.judge}: {tally['generated']} generated, {tally['cached']} from cache, "
            f"{tally['failed']} failed")


def _scoring(runlog: RunLog, plan: Plan, fingerprints: dict, tasks: dict, cache, profile) -> tuple[list[dict], dict]:
    """Rows and per-item records from the cache alone (no model), the judge's verdicts among them;
    the record gets how corpus metrics were computed (sacrebleu signatures, the WER normaliser)."""
    from bench.profile import HARNESS
    from bench.runner import score_all
    from bench.scoring import task_signatures

    sigs = {n: s for n, (t, _) in tasks.items() if (s := task_signatures(t))}
    if sigs:
        runlog.update(metric_signatures=sigs)
    record = runlog.record
    with profile.time(HARNESS, "scoring"):
        rows, records = score_all(tasks, plan.conditions_for, fingerprints, cache, plan.max_new_tokens,
                                  record.reference_fingerprints, plan.baselines, plan.bucket_systems)
        if plan.judge and record.judge:
            from bench.judge import judge_rows

            rows.extend(judge_rows(plan, tasks, records, cache, record.judge["fingerprint"]))
    ident = plan.identity()
    for r in rows:
        r.update(run=runlog.run_dir.name, git_sha=record.git_sha, config_hash=ident)
    return rows, records


def _report(runlog: RunLog, plan: Plan, rows: list[dict], records: dict, tasks: dict, write: bool, profile) -> None:
    """The run directory's files: rows.jsonl always; with `write`, the tables, outputs.jsonl and report.html."""
    from bench import report
    from bench.profile import HARNESS

    with profile.time(HARNESS, "report"):
        report.write_rows(runlog.run_dir, rows, asdict(plan))
        if write:
            from bench.html import write_report

            report.write_outputs(runlog.run_dir, records, {k: v[1] for k, v in tasks.items()})
            write_report(runlog.run_dir, rows, tasks, records, runlog.record.to_dict())


def score_run(run_dir: str | Path, write: bool = True) -> RunResult:
    """Rows, tables and outputs of a run again from its stored outputs (its cache): no model is loaded."""
    from bench.cache import OutputCache
    from bench.profile import Profile

    plan, record = load_plan(run_dir)
    plan.cache = record.cache_path or plan.cache
    if not record.fingerprints:
        raise ValueError(f"{run_dir}: the run recorded no system fingerprints, so it has no outputs to score")
    tasks, runlog, profile = build_tasks(plan), RunLog(Path(run_dir), record), Profile()
    cache = OutputCache(plan.cache_path())
    try:
        rows, records = _scoring(runlog, plan, record.fingerprints, tasks, cache, profile)
    finally:
        cache.close()
    _report(runlog, plan, rows, records, tasks, write, profile)
    return RunResult(runlog.run_dir, rows, records, tasks, record)


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
                context = {metric.needs: by_system[metric.source]} if metric.source in by_system else {}
                res = score_metric(metric, sub, outputs, context)
                if res is not None:
                    rows.append({"system": system, "task": task, "task_version": t.version, "condition": condition,
                                 field_name: g, "metric": metric.name, "baseline": None,
                                 "higher_is_better": metric.higher_is_better, "timing": metric.timing,
                                 "primary": metric.name == t.primary_metric(), **metric_labels(metric), **res})
    return rows
