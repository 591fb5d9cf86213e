"""What the HTTP path costs: items/s of a system run directly against the same system behind
`audiochat-bench serve` (a separate process on 127.0.0.1) through the `openai` endpoint system, at
client concurrency 1 (one request at a time, as `run --batch-size 1` directly) and 8 (the server
micro-batches 8 concurrent requests, as `run --batch-size 8` directly). Every measurement is a real
run through the evaluator with a fresh cache; the runs alternate and the best of `--repeats` is kept,
so a busy machine slows both sides alike. The outputs of the two paths are compared too.

    OMP_NUM_THREADS=1 python scripts/bench_serve.py [--system text] [--task typed-qa] [--limit 16] [--max-new-tokens 32]

`--server asgi` measures scripts/serve_asgi.py (Starlette + uvicorn) in place of `serve` (issue 40).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.evaluate import Plan, evaluate  # noqa: E402
from bench.plugins import Context, build_system  # noqa: E402
from bench.types import Request, Turn  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(plan: Plan, built: dict | None = None) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        plan.output_dir = tmp
        t0 = time.perf_counter()
        result = evaluate(plan, progress=False, write=False, log=lambda _: None, built=built)
        seconds = time.perf_counter() - t0
    name = plan.systems[0]
    return seconds, {i: (g.text if g else None) for i, g in result.outputs(name, plan.tasks[0]).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="text")
    ap.add_argument("--task", default="typed-qa")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--server", choices=["stdlib", "asgi"], default="stdlib",
                    help="`serve` (stdlib), or the Starlette + uvicorn prototype (scripts/serve_asgi.py)")
    args = ap.parse_args()

    port = _free_port()
    fakes = args.system in ("fake", "echo")  # the test fakes: no model, so the HTTP path is all there is to time
    if fakes:
        from tests.fakes import register

        register()
    if args.server == "stdlib":
        command = [sys.executable, *([str(ROOT / "tests" / "cli_with_fakes.py")] if fakes else ["-m", "bench"]), "serve"]
    else:
        command = [sys.executable, str(ROOT / "scripts" / "serve_asgi.py"), *(["--fakes"] if fakes else [])]
    server = subprocess.Popen(command + ["--system", args.system, "--port", str(port), "--max-new-tokens",
                                         str(args.max_new_tokens), "--max-batch", "8"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"serve did not start: {line!r}")
        system = build_system(args.system, Context(max_new_tokens=args.max_new_tokens))
        system.generate_batch([Request(Turn("user", text="Hello."))])  # warmed up, as serve's is
        common = dict(tasks=[args.task], limit=args.limit, max_new_tokens=args.max_new_tokens)
        url = f"http://127.0.0.1:{port}/v1"
        rows, same = [], True
        for conc in (1, 8):
            best = {"direct": float("inf"), "served": float("inf")}
            for _ in range(args.repeats):
                t, direct = _timed(Plan(systems=[args.system], batch_size=conc, **common), {args.system: system})
                best["direct"] = min(best["direct"], t)
                t, served = _timed(Plan(systems=["openai"], batch_size=conc, system_args={"openai": {
                    "model": args.system, "base_url": url, "concurrency": str(conc)}}, **common))
                best["served"] = min(best["served"], t)
                same = same and direct == served
            rows.append((conc, args.limit / best["direct"], args.limit / best["served"]))
    finally:
        server.terminate()
        server.wait()
    print(f"# {args.system} direct vs `serve` ({args.server}) + `openai`: {args.task}, {args.limit} items, greedy, "
          f"max_new_tokens={args.max_new_tokens}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"best of {args.repeats}\n")
    print("| concurrency (= direct batch size) | direct items/s | served items/s | HTTP cost |")
    print("|---|---|---|---|")
    for conc, d, s in rows:
        print(f"| {conc} | {d:.2f} | {s:.2f} | {100 * (d / s - 1):+.1f} % |")
    print(f"\noutputs identical on both paths: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
