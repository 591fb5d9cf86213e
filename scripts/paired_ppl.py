"""Paired bootstrap of a system's perplexity between two runs on the same items: two checkpoints of
one system (say `audiochatllama-lora` with and without a further training stage), each evaluated in
its own run. Rebuilds each run's generations from its outputs.jsonl (scoring tasks record each item's
NLL there) and scores them with the harness's own metric and paired bootstrap (bench.scoring).

    python scripts/paired_ppl.py RUN_A RUN_B [--system audiochatllama-lora] [--task response-ppl]

Prints the PPL of each and B − A with its 95 % interval (an interval that excludes 0: B differs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.plugins import build_task
from bench.scoring import Outputs, paired_difference, score_metric
from bench.types import Generation


def run_outputs(run: str, system: str, task: str, condition: str) -> Outputs:
    """item id → the system's generation in that run (None where it failed)."""
    out = {}
    for o in map(json.loads, (Path(run) / "outputs.jsonl").read_text().splitlines()):
        if (o["system"], o["task"], o["condition"]) == (system, task, condition):
            ok = o["status"] == "ok" and o.get("nll") is not None
            out[o["item_id"]] = Generation(o["text"], tokens=o["tokens"], nll=o["nll"]) if ok else None
    if not any(out.values()):
        raise SystemExit(f"{run}: no scored {system}/{task} items with an nll (older runs did not record it: "
                         "rerun the same command, it reads the cache)")
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
