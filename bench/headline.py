"""The answer at a glance: one primary metric per task, systems as rows, and one line of verdicts
per compared system against each baseline, from the paired intervals the rows already hold.

Works from tidy rows alone (rows.jsonl), so `run`, `score`, `report` and the HTML report show the
same headline. Which metric leads a task is the task's declaration (rows carry `primary`); a metric
that takes one value for every system on the run (EM against sentence answers: 0 for all) tells
nothing and is passed over for the next one.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from bench.voices import VOICE_CONDITIONS

STEP = 0.05  # the difference the "items needed" hint is worked out for (5 points on a 0-1 metric)


def _plain(r: dict) -> bool:
    return not r.get("baseline") and not r.get("bucket") and not r.get("voice") and not r.get("timing")


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def primary_metrics(rows: list[dict], condition: str | None = None) -> dict[str, str]:
    """task → its headline metric on `condition` (default: every condition): the one rows mark
    `primary`, unless it is constant across the run's systems; else the first metric that varies;
    else the first one (rows written before rows had `primary`: the task's first metric)."""
    out: dict[str, str] = {}
    plain = [r for r in rows if _plain(r) and (condition is None or r["condition"] == condition)]
    for task in dict.fromkeys(r["task"] for r in plain):
        sub = [r for r in plain if r["task"] == task]
        metrics = list(dict.fromkeys(r["metric"] for r in sub))
        declared = [m for m in metrics if any(r.get("primary") for r in sub if r["metric"] == m)]

        def varies(m: str) -> bool:
            values = {round(r["value"], 9) for r in sub if r["metric"] == m and _finite(r["value"])}
            return len(values) > 1 or len({r["system"] for r in sub if r["metric"] == m}) < 2

        out[task] = next((m for m in declared + metrics if varies(m)), (declared + metrics)[0])
    return out


@dataclass
class Verdict:
    system: str
    baseline: str
    better: list[dict] = field(default_factory=list)  # difference rows, main condition
    worse: list[dict] = field(default_factory=list)
    unclear: list[dict] = field(default_factory=list)
    # significant elsewhere (other conditions, WER buckets) and unlike the task's main-condition verdict
    elsewhere: list[dict] = field(default_factory=list)


@dataclass
class Headline:
    condition: str
    columns: list[tuple[str, str, bool, int]]  # (task, metric, higher is better, largest n)
    systems: list[str]
    cells: dict[tuple[str, str], dict]  # (system, task) → row
    best: set[tuple[str, str]]
    toplines: list[str]
    verdicts: list[Verdict]
    failed: dict[str, int]  # system → items failed over the headline's cells


def where(r: dict, main: str) -> str:
    """A difference row's place: its task, and its condition / WER bucket when not the main condition."""
    at = [] if r["condition"] == main else [r["condition"]]
    if r.get("bucket"):
        at.append(f"{r['bucket_by']} WER {r['bucket']}")
    return r["task"] + (f" @ {', '.join(at)}" if at else "")


def build(rows: list[dict], toplines=(), verdict_systems=None, baselines=None) -> Headline:
    """The headline of `rows`. `toplines`: systems shown but not ranked (they read the gold text);
    `verdict_systems`: who gets verdicts (default: every system that is neither a baseline nor a
    topline); `baselines`: against whom (default: every baseline the rows have, in order)."""
    plain = [r for r in rows if _plain(r)]
    conds = list(dict.fromkeys(r["condition"] for r in plain))
    main = "clean" if "clean" in conds else (conds[0] if conds else "clean")
    prim = primary_metrics(rows, main)
    # an unseen voice family is a headline column of its own (`spoken-qa @ voice-joe`), beside the main one
    shown = {main, *(c for c in conds if c in VOICE_CONDITIONS)}
    base = [r for r in plain if r["condition"] in shown and prim.get(r["task"]) == r["metric"]]
    systems = list(dict.fromkeys(r["system"] for r in plain))
    cells = {(r["system"], where(r, main)): r for r in base}
    columns, best = [], set()
    for task, metric in ((where(r, main), r["metric"]) for r in _first_of_each(base, main)):
        col = [r for r in base if where(r, main) == task]
        hib = col[0]["higher_is_better"]
        columns.append((task, metric, hib, max(r["n"] for r in col)))
        ranked = [r for r in col if r["system"] not in toplines and _finite(r["value"])]
        if len(ranked) > 1:
            top = (max if hib else min)(r["value"] for r in ranked)
            best |= {(r["system"], task) for r in ranked if r["value"] == top}
    failed: dict[str, int] = {}
    for r in base:
        failed[r["system"]] = failed.get(r["system"], 0) + (r.get("n_failed") or 0)
    diffs = [r for r in rows if r.get("baseline") and not r.get("voice") and not r.get("timing")
             and prim.get(r["task"]) == r["metric"]]
    baselines = [b for b in (baselines or dict.fromkeys(r["baseline"] for r in diffs))
                 if any(r["baseline"] == b for r in diffs)]
    if verdict_systems is None:
        verdict_systems = [s for s in systems if s not in baselines and s not in toplines]
    verdicts = []
    for s in verdict_systems:
        for k, b in enumerate(baselines):
            mine = [r for r in diffs if r["system"] == s and r["baseline"] == b]
            if not mine:
                continue
            v = Verdict(s, b)
            later = []
            for r in mine:
                good = (r["value"] > 0) == bool(r["higher_is_better"])
                if r["condition"] in shown and not r.get("bucket"):
                    (v.better if r.get("significant") and good else v.worse if r.get("significant") else v.unclear).append(r)
                elif r.get("significant") and k == 0:  # where else: against the first baseline only
                    later.append((r, good))
            # elsewhere: only where the verdict differs from the task's verdict on the main condition
            at_main = ({r["task"]: "better" for r in v.better if r["condition"] == main}
                       | {r["task"]: "worse" for r in v.worse if r["condition"] == main})
            v.elsewhere = [r for r, good in later if at_main.get(r["task"]) != ("better" if good else "worse")]
            verdicts.append(v)
    return Headline(main, columns, systems, cells, best, list(toplines), verdicts, failed)


def _first_of_each(base: list[dict], main: str) -> list[dict]:
    """One row per headline column, in order: each task on the main condition, then each task under
    each voice condition."""
    seen: dict[str, dict] = {}
    for r in sorted(base, key=lambda r: r["condition"] != main):
        seen.setdefault(where(r, main), r)
    return list(seen.values())


def fmt(x, digits: int = 3) -> str:
    if not _finite(x):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def half_width(r: dict) -> float:
    return (r["ci_high"] - r["ci_low"]) / 2 if _finite(r["ci_high"]) and _finite(r["ci_low"]) else float("nan")


def cell_text(r: dict | None) -> str:
    return "–" if r is None else f"{fmt(r['value'])} ±{fmt(half_width(r), 2)}"


def diff_text(r: dict) -> str:
    return f"{_signed(r['value'])} [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"


def items_needed(r: dict, step: float = STEP) -> int | None:
    """About how many items make the 95% interval of this difference ±`step` (half-width ∝ 1/√n)."""
    hw = half_width(r)
    return math.ceil(r["n"] * (hw / step) ** 2) if _finite(hw) and hw > 0 and r["n"] else None


def verdict_parts(v: Verdict, main: str) -> list[str]:
    """better (with the interval), worse (the difference), no significant difference (± half-width),
    then where else (other conditions, WER buckets) the difference is significant."""
    parts = []
    if v.better:
        parts.append("better on " + ", ".join(f"{where(r, main)} ({diff_text(r)})" for r in v.better))
    if v.worse:
        parts.append("worse on " + ", ".join(f"{where(r, main)} ({_signed(r['value'])})" for r in v.worse))
    if v.unclear:
        parts.append("n.s. on " + ", ".join(where(r, main) for r in v.unclear))
    good = [r for r in v.elsewhere if (r["value"] > 0) == bool(r["higher_is_better"])]
    bad = [r for r in v.elsewhere if r not in good]
    if good:
        parts.append("better at " + ", ".join(f"{where(r, main)} ({diff_text(r)})" for r in good))
    if bad:
        parts.append("worse at " + ", ".join(f"{where(r, main)} ({_signed(r['value'])})" for r in bad))
    return parts


def _signed(x: float) -> str:
    return ("+" if x > 0 else "") + fmt(x, 2)


def _fraction(h: Headline, task: str) -> bool:
    """Whether a column's values are all fractions (0-1), where a difference of STEP is 5 points."""
    vals = [r["value"] for (s, t), r in h.cells.items() if t == task and _finite(r["value"])]
    return bool(vals) and all(0 <= v <= 1 for v in vals)


def _grid(h: Headline, columns: list) -> list[str]:
    head = ["system"] + [f"{t} {'↑' if hib else '↓'}" for t, _, hib, _ in columns]
    body = []
    for s in h.systems:
        cells = [s + (" (topline)" if s in h.toplines else "")]
        for t, *_ in columns:
            c = cell_text(h.cells.get((s, t)))
            cells.append(f"**{c}**" if (s, t) in h.best else c)
        body.append(cells)
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body]


def render(h: Headline, width: int = 120) -> str:
    """The headline as text: the table (split into column blocks narrower than `width`), the
    metrics with their n, then the verdicts, wrapped at `width`."""
    if not h.columns:
        return "(no rows to show)"
    out = [f"## Headline ({h.condition}; value ±half-width of the 95% CI; **best**"
           + (" other than the topline" if h.toplines else "") + ")"]
    blocks, cur = [], []
    for col in h.columns:  # greedy column blocks that fit the width
        if cur and max(map(len, _grid(h, cur + [col]))) > width:
            blocks.append(cur)
            cur = []
        cur.append(col)
    blocks.append(cur)
    for b in blocks:
        out += _grid(h, b)
    wrap = lambda s: textwrap.wrap(s, width, subsequent_indent="  ", break_on_hyphens=False)
    ns = {n for *_, n in h.columns}
    out += wrap(f"metrics (n {ns.pop()} items each): " + ", ".join(f"{t} {m}" for t, m, *_ in h.columns) if len(ns) == 1
                else "metrics: " + ", ".join(f"{t} {m} (n {n})" for t, m, _, n in h.columns))
    failed = {s: n for s, n in h.failed.items() if n}
    if failed:
        out += wrap("failed items (left out of the scores; see outputs.jsonl): "
                    + ", ".join(f"{s} {n}" for s, n in failed.items()))
    if h.verdicts:
        out += ["## Verdicts (paired bootstrap, system − baseline; 95% CI where better; n.s.: the CI holds 0)"]
        for v in h.verdicts:
            parts = verdict_parts(v, h.condition)
            out += wrap(f"{v.system} vs {v.baseline}: " + ("; ".join(parts) if parts else "nothing to compare"))
        need, fractions = {}, {t for t, *_ in h.columns if _fraction(h, t)}
        for v in h.verdicts:
            for r in v.unclear:
                n = items_needed(r) if where(r, h.condition) in fractions else None
                if n is not None and n > r["n"]:
                    need[where(r, h.condition)] = max(need.get(where(r, h.condition), 0), n)
        if need:
            by_n: dict[int, list[str]] = {}
            for t, n in need.items():
                by_n.setdefault(round(n, -1), []).append(t)
            out += wrap(f"Too few items to call a difference of {STEP:g}; at this run's variance that needs about "
                        + "; ".join(f"{n:,} items on {', '.join(ts)}" for n, ts in sorted(by_n.items())) + ".")
    return "\n".join(out)


def from_config(rows: list[dict], config: dict | None = None) -> Headline:
    """`build` with the run's own choices: its `toplines`, `verdict_systems` and `baselines`."""
    cfg = config or {}
    return build(rows, cfg.get("toplines") or (), cfg.get("verdict_systems") or None, cfg.get("baselines") or None)


def headline(rows: list[dict], config: dict | None = None, width: int = 120) -> str:
    """The headline of a run's rows as text (`config`: the run's, see `from_config`)."""
    return render(from_config(rows, config), width)
