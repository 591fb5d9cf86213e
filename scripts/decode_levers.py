"""One decode step of the embedded LLM under each lever of results/perf_llm.md that `perf` cannot switch
on its own: the harness's dynamic KV cache (the reference), a static, preallocated KV cache (eager, and
with the step compiled by `torch.compile`, cold: a fresh compile cache), eager attention, bf16. Each
lever runs in its own process on the same prompts (the first `--batch` of `perf`'s set), prefilled
once, then `--steps` greedy steps; it reports the median milliseconds a step (after 4), the first
step's seconds (where compilation happens) and how many of its tokens equal the reference's.

    python scripts/decode_levers.py [--batch 64] [--steps 24] [--levers dynamic,static,compiled,eager,bf16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LEVERS = ("dynamic", "static", "compiled", "eager", "bf16")


def measure(lever: str, batch: int, steps: int) -> dict:
    import torch
    from transformers import StaticCache

    from systems.llm import ChatLLM
    from systems.perf import perf_prompts

    llm = ChatLLM.load("smollm2", dtype="bfloat16" if lever == "bf16" else "float32",
                       attn_implementation="eager" if lever == "eager" else None)
    prompts = [llm.prompt_ids(m) for m in perf_prompts(batch)]
    llm._plain_cache()  # (sets the forward's keyword names)
    times, toks = [], []
    with torch.inference_mode():
        if lever in ("static", "compiled"):
            ids, mask = llm._left_pad(prompts)
            width = ids.shape[1]
            cache = StaticCache(config=llm.model.config, max_cache_len=width + steps)
            full = torch.zeros(batch, width + steps, dtype=torch.long)
            full[:, :width] = mask
            logits = llm._forward(input_ids=ids, attention_mask=full, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                  cache=cache, cache_position=torch.arange(width), last_only=True).logits[:, -1]
            last, pos = logits.argmax(-1), mask.sum(1)

            def step(tok, am, pid, cp):
                return llm._forward(input_ids=tok, attention_mask=am, position_ids=pid, cache=cache,
                                    cache_position=cp).logits[:, -1].argmax(-1)

            fn = torch.compile(step, dynamic=False) if lever == "compiled" else step
            for s in range(steps):
                full[:, width + s] = 1
                t0 = time.perf_counter()
                last = fn(last[:, None], full, pos[:, None], torch.tensor([width + s]))
                times.append(time.perf_counter() - t0)
                toks.append(last.tolist())
                pos = pos + 1
        else:
            cache, mask, logits = llm._prefill(prompts)
            last, pos = logits.argmax(-1), mask.sum(1)
            for _ in range(steps):
                mask = torch.cat([mask, mask.new_ones(batch, 1)], 1)
                t0 = time.perf_counter()
                logits = llm._forward(input_ids=last[:, None], attention_mask=mask, position_ids=pos[:, None],
                                      cache=cache).logits[:, -1]
                last, pos = logits.argmax(-1), pos + 1
                times.append(time.perf_counter() - t0)
                toks.append(last.tolist())
    return {"lever": lever, "ms": 1000 * statistics.median(times[4:]), "first_s": times[0], "tokens": toks,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--levers", default=",".join(LEVERS))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # (a child process: measure this lever, print JSON)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.steps)))
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it
    out = {}
    for lever in args.levers.split(","):
        with tempfile.TemporaryDirectory() as tmp:  # a cold compile cache for each process
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tmp}
            res = subprocess.run([sys.executable, __file__, "--one", lever, "--batch", str(args.batch),
                                  "--steps", str(args.steps)], env=env, capture_output=True, text=True)
        if res.returncode:
            print(f"{lever}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        out[lever] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{lever}: {out[lever]['ms']:.1f} ms a step", file=sys.stderr, flush=True)
    ref = out.get("dynamic", {}).get("tokens")
    print(f"| lever | ms a step (median) | tokens/s | first step s | tokens equal to the dynamic cache's |\n"
          f"|---|---|---|---|---|")
    for lever, r in out.items():
        flat = [t for row in r["tokens"] for t in row]
        same = "–" if ref is None else f"{sum(a == b for a, b in zip(flat, (t for row in ref for t in row)))}/{len(flat)}"
        print(f"| {lever} | {r['ms']:.1f} | {args.batch / r['ms'] * 1000:.0f} | {r['first_s']:.1f} | {same} |")


if __name__ == "__main__":
    main()
