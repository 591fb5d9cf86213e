"""Paired bootstrap of a system's perplexity between two runs on the same items: two checkpoints of
one system (say `audiochatllama-lora` with and without a further training stage), each evaluated in
its own run. Reads the per-item NLL that each run's outputs.jsonl records for scoring tasks, and
resamples the items both runs scored with the harness's own bootstrap (bench.stats).

    python scripts/paired_ppl.py RUN_A RUN_B [--system audiochatllama-lora] [--task response-ppl]

Prints the PPL of each and B − A with its 95 % interval (an interval that excludes 0: B differs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.stats import ALPHA, resample_counts


def item_nll(run: str, system: str, task: str) -> dict[str, tuple[float, int]]:
    out = {}
    for o in map(json.loads, (Path(run) / "outputs.jsonl").read_text().splitlines()):
        if o["system"] == system and o["task"] == task and o["status"] == "ok" and o.get("nll") is not None:
            out[(o["condition"], o["item_id"])] = (o["nll"], o["tokens"])
    if not out:
        raise SystemExit(f"{run}: no scored {system}/{task} items with an nll (older runs did not record it: "
                         "rerun the same command, it reads the cache)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--system", default="audiochatllama-lora")
    ap.add_argument("--task", default="response-ppl")
    args = ap.parse_args()
    a, b = (item_nll(r, args.system, args.task) for r in (args.run_a, args.run_b))
    keys = sorted(a.keys() & b.keys())
    (na, ta), (nb, tb) = (np.array([d[k] for k in keys], dtype=float).T for d in (a, b))
    w = resample_counts(len(keys))  # (n_boot, n): the same resamples for both runs
    diff = np.exp(w @ nb / (w @ tb)) - np.exp(w @ na / (w @ ta))
    lo, hi = np.quantile(diff, [ALPHA / 2, 1 - ALPHA / 2])
    pa, pb = np.exp(na.sum() / ta.sum()), np.exp(nb.sum() / tb.sum())
    print(f"{args.system}/{args.task}, {len(keys)} items: A {pa:.3f}, B {pb:.3f}, B - A {pb - pa:+.3f} [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    main()
