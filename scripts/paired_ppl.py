"""Paired bootstrap of a system's perplexity between two runs on the same items: two checkpoints of
one system (say `audiochatllama-lora` with and without a further training stage), each evaluated in
its own run. Reads each run's generations through the evaluator (`score_run`: its cache; scoring tasks
store each item's NLL) and scores them with the harness's own metric and paired bootstrap (bench.scoring).

    python scripts/paired_ppl.py RUN_A RUN_B [--system audiochatllama-lora] [--task response-ppl]

Prints the PPL of each and B − A with its 95 % interval (an interval that excludes 0: B differs).
"""
from __future__ import annotations

import argparse

from bench.evaluate import score_run
from bench.plugins import build_task
from bench.scoring import Outputs, paired_difference, score_metric


def run_outputs(run: str, system: str, task: str, condition: str) -> Outputs:
    """item id → the system's generation in that run (None where it failed), from the run's cache."""
    out = score_run(run, write=False).outputs(system, task, condition)
    if not any(out.values()):
        raise SystemExit(f"{run}: no scored {system}/{task} items under {condition}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--system", default="audiochatllama-lora")
    ap.add_argument("--task", default="response-ppl")
    ap.add_argument("--condition", default="clean")
    args = ap.parse_args()
    task = build_task(args.task)
    metric = next(m for m in task.metrics if m.name == "ppl")
    items = task.items()
    a, b = (run_outputs(r, args.system, args.task, args.condition) for r in (args.run_a, args.run_b))
    pa, pb = (score_metric(metric, items, o, {})["value"] for o in (a, b))
    d = paired_difference(metric, items, b, a, {})
    print(f"{args.system}/{args.task}, {d['n']} items: A {pa:.3f}, B {pb:.3f}, "
          f"B - A {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")


if __name__ == "__main__":
    main()
