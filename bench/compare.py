"""`audiochat-bench compare BASELINE_RUN NEW_RUN`: the regression gate.

A metric regresses when the new value is worse than the baseline's beyond the baseline's 95%
confidence interval and by more than `--tolerance` (absolute). A row of the baseline missing from
the new run also fails the gate (a task or system silently dropped is a regression too). Exit 0 when
nothing regressed, 1 otherwise, after one table of every metric that moved: by how much, and whether
beyond the baseline's interval.
"""
from __future__ import annotations

import math
from pathlib import Path

from bench.report import read_rows, section


SAME = 1e-4  # relative change below which a value has not moved (summation order, BLAS differences)


def _key(r: dict) -> tuple:
    return (r["system"], r["task"], section(r), r["metric"])


def changes(base_rows: list[dict], new_rows: list[dict], tolerance: float = 0.0,
            ignore: tuple[str, ...] = ()) -> list[dict]:
    """Every metric that moved, went missing or is new: {status, key, base, new}, status one of
    REGRESSED (worse beyond the baseline's CI and the tolerance), MISSING, improved, within CI (worse,
    but inside the interval), new, note (the task's version changed). Left out: differences rows,
    timing metrics (machine-dependent: the task marks them; reported, never gated) and `ignore`."""
    keep = lambda r: not r.get("baseline") and not r.get("timing") and r["metric"] not in ignore
    base = {_key(r): r for r in base_rows if keep(r)}
    new = {_key(r): r for r in new_rows if keep(r)}
    out = []
    for k, b in base.items():
        n = new.get(k)
        if n is None:
            out.append({"status": "MISSING", "key": k, "base": b, "new": None})
            continue
        if b.get("task_version") != n.get("task_version"):
            out.append({"status": "note", "key": k, "base": b, "new": n})
        bv, nv = b["value"], n["value"]
        if bv != bv or nv != nv or math.isclose(nv, bv, rel_tol=SAME, abs_tol=1e-12):
            continue  # NaN on either side, or unchanged (float noise of another machine's arithmetic)
        worse = nv < bv if b["higher_is_better"] else nv > bv
        outside = nv < b["ci_low"] if b["higher_is_better"] else nv > b["ci_high"]
        status = ("REGRESSED" if worse and outside and abs(nv - bv) > tolerance
                  else "within CI" if worse else "improved")
        out.append({"status": status, "key": k, "base": b, "new": n, "beyond": outside if worse else
                    (nv > b["ci_high"] if b["higher_is_better"] else nv < b["ci_low"])})
    out += [{"status": "new", "key": k, "base": None, "new": new[k]} for k in new.keys() - base.keys()]
    return out


def _line(c: dict) -> str:
    name = "/".join(map(str, c["key"]))
    b, n = c["base"], c["new"]
    if c["status"] == "MISSING":
        return f"MISSING   {name}: in the baseline, not in the new run"
    if c["status"] == "new":
        return f"new       {name}: not in the baseline"
    if c["status"] == "note":
        return f"note      {name}: task version {b.get('task_version')} → {n.get('task_version')}"
    return (f"{c['status']:<9} {name}: {b['value']:.4g} [{b['ci_low']:.4g}, {b['ci_high']:.4g}] → {n['value']:.4g} "
            f"(n {b['n']} → {n['n']})")


def compare(base_rows: list[dict], new_rows: list[dict], tolerance: float = 0.0,
            ignore: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(regressions, other notes) between two sets of rows, one line each (see `changes`)."""
    cs = changes(base_rows, new_rows, tolerance, ignore)
    return ([_line(c) for c in cs if c["status"] in ("REGRESSED", "MISSING")],
            [_line(c) for c in cs if c["status"] not in ("REGRESSED", "MISSING")])


ORDER = ("REGRESSED", "MISSING", "within CI", "improved", "new", "note")


def compact(cs: list[dict]) -> str:
    """What moved, as one table: by how much, and whether beyond the baseline's 95% interval."""
    moved = sorted((c for c in cs if c["status"] not in ("note",)), key=lambda c: (ORDER.index(c["status"]), c["key"]))
    if not moved:
        return "nothing moved"
    fmt = lambda x: f"{x:.4g}"
    lines = ["| status | system | task | condition | metric | baseline [95% CI] | new | change | beyond CI |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in moved:
        b, n = c["base"], c["new"]
        was = f"{fmt(b['value'])} [{fmt(b['ci_low'])}, {fmt(b['ci_high'])}]" if b else "–"
        now = fmt(n["value"]) if n else "–"
        delta = f"{n['value'] - b['value']:+.4g}" if b and n else "–"
        beyond = "–" if "beyond" not in c else ("yes" if c["beyond"] else "no")
        lines.append(f"| {c['status']} | " + " | ".join(map(str, c["key"])) + f" | {was} | {now} | {delta} | {beyond} |")
    return "\n".join(lines)


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
    cs = changes(read_rows(Path(args.baseline_run)), read_rows(Path(args.new_run)), args.tolerance)
    print(compact(cs))
    for c in cs:
        if c["status"] == "note":
            print(_line(c))
    counts = {s: sum(c["status"] == s for c in cs) for s in ORDER}
    bad = counts["REGRESSED"] + counts["MISSING"]
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "note") or "no metric moved")
    print(f"{bad} regression(s): {', '.join('/'.join(map(str, c['key'])) for c in cs if c['status'] in ('REGRESSED', 'MISSING'))}"
          if bad else "no regressions")
    return 1 if bad else 0
