"""`audiochat-bench perf --systems ...`: per system and batch size, items/s, RTFx (seconds of audio
per second of wall time), generated tokens/s, peak RSS, and the harness overhead: the wall time of
a real run through the evaluator (condition, cache lookups and writes, batching, scoring) divided by
the summed time of bare `generate_batch` calls on the same, already loaded requests."""
from __future__ import annotations

import resource
import sys
import tempfile
import time

from bench.conditions import apply
from bench.evaluate import Plan, evaluate
from bench.plugins import Context, build_system, build_task
from bench.runner import task_gen_config
from bench.types import Request


def system_perf(systems: list[str], task_name: str, limit: int, batch_sizes: list[int], options: dict) -> str:
    task = build_task(task_name)
    items = task.items(limit)
    ctx = Context(**options)
    cap = int(options.get("max_new_tokens", 64))
    gconf = task_gen_config(task, cap)
    requests = []
    for it in items:
        m = apply("clean", it)
        requests.append(Request(m.turn, m.history, m.instruction, task.transcript_only, gconf["max_new_tokens"],
                                tuple(gconf.get("stop", ()))))
    audio = sum(t.audio.seconds for r in requests for t in (*r.history, r.turn) if t.audio is not None)
    lines = [f"# System throughput: {task_name}, {len(items)} items ({audio:.0f} s of audio), greedy, "
             f"max_new_tokens={gconf['max_new_tokens']}", "",
             "| system | batch | items/s | ÷ one at a time | RTFx | tokens/s | peak RSS (GB) | bare s | harness s | overhead |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in systems:
        system = build_system(name, ctx)
        system.generate_batch(requests[:1])  # warm-up: weights loaded, first-call costs paid
        one = None  # items/s at batch 1 (the VoiceBench loop), where measured
        for bs in batch_sizes:
            forget = getattr(system, "forget", lambda: None)  # (a cascade remembers transcripts: each pass hears anew)
            forget()
            t_bare, tokens = 0.0, 0
            for i in range(0, len(requests), bs):
                t0 = time.perf_counter()
                gens = system.generate_batch(requests[i:i + bs])
                t_bare += time.perf_counter() - t0
                tokens += sum(g.tokens for g in gens)
            forget()
            with tempfile.TemporaryDirectory() as tmp:
                plan = Plan(systems=[name], tasks=[task_name], limit=limit, batch_size=bs, output_dir=tmp,
                            max_new_tokens=cap, llm=options.get("llm"))
                t0 = time.perf_counter()
                evaluate(plan, progress=False, write=False, log=lambda _: None, built={name: system})
                t_run = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
            rate = len(items) / t_run
            one = rate if bs == 1 else one
            ratio = f"{rate / one:.2f}" if one else "–"
            lines.append(f"| {name} | {bs} | {rate:.3g} | {ratio} | {audio / t_run:.1f} | {tokens / t_run:.1f} | "
                         f"{rss:.2f} | {t_bare:.1f} | {t_run:.1f} | {t_run / t_bare:.3f} |")
            print(lines[-1], file=sys.stderr)
    return "\n".join(lines) + "\n\nOverhead = harness wall time ÷ summed bare generate_batch time (target ≤ 1.10).\n"
