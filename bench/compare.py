"""`audiochat-bench compare BASELINE_RUN NEW_RUN`: the regression gate.

A metric regresses when the new value is worse than the baseline's beyond the baseline's 95%
confidence interval and by more than `--tolerance` (absolute). A row of the baseline missing from
the new run also fails the gate (a task or system silently dropped is a regression too). Exit 0 when
nothing regressed, 1 otherwise, with a line for every metric that moved.
"""
from __future__ import annotations

from pathlib import Path

from bench.report import read_rows, section


def _key(r: dict) -> tuple:
    return (r["system"], r["task"], section(r), r["metric"])


def compare(base_rows: list[dict], new_rows: list[dict], tolerance: float = 0.0,
            ignore: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(regressions, other notes) between two sets of rows. Left out: differences rows, timing metrics
    (machine-dependent: the task marks them; reported, never gated) and the metrics named in `ignore`."""
    keep = lambda r: not r.get("baseline") and not r.get("timing") and r["metric"] not in ignore
    base = {_key(r): r for r in base_rows if keep(r)}
    new = {_key(r): r for r in new_rows if keep(r)}
    bad, notes = [], []
    for k, b in base.items():
        name = "/".join(map(str, k))
        n = new.get(k)
        if n is None:
            bad.append(f"MISSING   {name}: in the baseline, not in the new run")
            continue
        if b.get("task_version") != n.get("task_version"):
            notes.append(f"note      {name}: task version {b.get('task_version')} → {n.get('task_version')}")
        bv, nv = b["value"], n["value"]
        if bv != bv or nv != nv:  # NaN on either side: nothing to compare
            continue
        worse = nv < bv if b["higher_is_better"] else nv > bv
        outside = nv < b["ci_low"] if b["higher_is_better"] else nv > b["ci_high"]
        line = f"{name}: {bv:.4g} [{b['ci_low']:.4g}, {b['ci_high']:.4g}] → {nv:.4g} (n {b['n']} → {n['n']})"
        if worse and outside and abs(nv - bv) > tolerance:
            bad.append("REGRESSED " + line)
        elif nv != bv:
            notes.append(("improved  " if not worse else "within CI ") + line)
    for k in new.keys() - base.keys():
        notes.append(f"new       {'/'.join(map(str, k))}: not in the baseline")
    return bad, notes


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="regression gate: exit 1 if NEW_RUN is worse than BASELINE_RUN beyond its CI",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    c.add_argument("baseline_run", help="run directory (or folder with rows.jsonl) of the baseline")
    c.add_argument("new_run", help="run directory of the new results")
    c.add_argument("--tolerance", type=float, default=0.0, help="absolute change always allowed (default 0)")


def cmd_compare(args) -> int:
    for d in (args.baseline_run, args.new_run):
        if not (Path(d) / "rows.jsonl").exists():
            raise FileNotFoundError(f"{d}: no rows.jsonl (run or score it first)")
    bad, notes = compare(read_rows(Path(args.baseline_run)), read_rows(Path(args.new_run)), args.tolerance)
    for line in notes + bad:
        print(line)
    print(f"{len(bad)} regression(s)" if bad else "no regressions")
    return 1 if bad else 0
