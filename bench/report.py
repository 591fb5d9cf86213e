"""Tables and files from tidy rows: rows.jsonl, table.md, table.csv, outputs.jsonl."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

ROW_FIELDS = ["run", "system", "task", "task_version", "condition", "voice_family", "bucket", "bucket_by", "voice",
              "metric",
              "baseline", "value", "ci_low", "ci_high", "significant", "n", "n_failed", "higher_is_better", "timing",
              "primary", "normalizer",
              "git_sha", "config_hash"]


def section(r: dict) -> str:
    """The heading a row's table sits under: its condition, and its WER bucket where it has one."""
    return r["condition"] + (f" · {r['bucket_by']} WER {r['bucket']}" if r.get("bucket") else "")


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def _grid(sub: list[dict], cell_fn) -> list[str]:
    """A systems × task/metric markdown grid of `sub` rows."""
    cols = list(dict.fromkeys((r["task"], r["metric"]) for r in sub))
    systems = list(dict.fromkeys(r["system"] for r in sub))
    cell = {(r["system"], r["task"], r["metric"]): r for r in sub}
    header = ["system"] + [f"{t}/{m} {'↑' if _hib(sub, t, m) else '↓'}" for t, m in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in systems:
        cells = [s] + [cell_fn(cell.get((s, t, m))) for t, m in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _abs_cell(r) -> str:
    return "–" if r is None else f"{_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"


def _diff_cell(r) -> str:
    if r is None:
        return "–"
    sign = "+" if r["value"] > 0 else ""
    return f"{sign}{_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]{' *' if r.get('significant') else ''}"


def markdown_table(rows: list[dict]) -> str:
    """Per condition: systems × task/metric, each cell `value [95% CI]`; then the paired differences
    against each baseline (cascade, topline), `*` where the interval excludes zero."""
    out = []
    for cond in dict.fromkeys(map(section, rows)):
        sub = [r for r in rows if section(r) == cond and not r.get("baseline")]
        lines = [f"### condition: {cond}", ""] + _grid(sub, _abs_cell)
        ns: dict = {}
        for r in sub:  # the largest n over a task's metrics (some metrics apply to fewer items)
            n, f = ns.get((r["system"], r["task"]), (0, 0))
            ns[(r["system"], r["task"])] = (max(n, r["n"]), max(f, r["n_failed"]))
        notes = [f"{s}/{t}: n={n}" + (f", {f} failed" if f else "") for (s, t), (n, f) in ns.items()]
        lines += ["", "n (items scored): " + "; ".join(notes), ""]
        for b in dict.fromkeys(r["baseline"] for r in rows if section(r) == cond and r.get("baseline")):
            diff = [r for r in rows if section(r) == cond and r.get("baseline") == b]
            lines += [f"#### {cond}: difference against `{b}` (paired bootstrap; * = 95% CI excludes 0)", ""]
            lines += _grid(diff, _diff_cell) + [""]
        out.append("\n".join(lines))
    return "\n".join(out) + "\n95% bootstrap confidence intervals in brackets; ↑ higher is better, ↓ lower is better.\n"


def _hib(rows: list[dict], task: str, metric: str) -> bool:
    return next(r["higher_is_better"] for r in rows if r["task"] == task and r["metric"] == metric)


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write `data` (text as UTF-8) to `path` unless the file holds exactly that already, so that
    rescoring or rerunning into a run directory leaves unchanged files (and their mtimes) alone.
    Returns whether it wrote."""
    data = data.encode() if isinstance(data, str) else data
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.write_bytes(data)
    return True


def write_rows(run_dir: Path, rows: list[dict], config: dict | None = None) -> None:
    """rows.jsonl, table.csv, table.md (every metric) and headline.md (the answer at a glance;
    `config`: the run's, for its toplines, verdict systems and baselines); each written only where
    it changed."""
    from bench.headline import headline

    write_if_changed(run_dir / "rows.jsonl", "".join(json.dumps({k: r.get(k) for k in ROW_FIELDS}) + "\n"
                                                     for r in rows))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in ROW_FIELDS})
    write_if_changed(run_dir / "table.csv", buf.getvalue())
    write_if_changed(run_dir / "table.md", markdown_table(rows))
    write_if_changed(run_dir / "headline.md", headline(rows, config) + "\n")


def write_outputs(run_dir: Path, per_item: dict, items_by_task: dict) -> None:
    """Per-item outputs for reading and for the report: one JSON line per (task, condition, item,
    system), with the failure reason where the item failed (and, for scoring tasks, the target's
    summed negative log-likelihood, so two systems can be compared item by item). Written only
    where it changed."""
    lines = []
    for (task, cond), by_system in per_item.items():
        items = {it.id: it for it in items_by_task[task]}
        for system, recs in by_system.items():
            for item_id, rec in recs.items():
                it, g = items[item_id], (rec.generation if rec else None)
                lines.append(json.dumps({
                    "task": task, "condition": cond, "item_id": item_id, "system": system,
                    "status": rec.status if rec else "missing", "error": rec.error if rec else None,
                    "prompt": it.turn.shown, "references": list(it.references),
                    "text": g.text if g else None, "transcript": g.transcript if g else None,
                    "seconds": g.seconds if g else None, "tokens": g.tokens if g else None,
                    "nll": g.nll if g else None,  # scoring tasks: the summed NLL, for per-item analyses
                }) + "\n")
    write_if_changed(run_dir / "outputs.jsonl", "".join(lines))


def read_rows(run_dir: Path) -> list[dict]:
    return [_migrate(json.loads(l)) for l in (run_dir / "rows.jsonl").read_text().splitlines() if l.strip()]


LEGACY_TIMING = ("rtfx",)  # rows written before rows had `timing`: the one timing metric there was


def _migrate(row: dict) -> dict:
    """Rows written before `bucket`, `bucket_by` and `timing` were fields: the bucket was packed into
    the condition ("clean · cascade WER >30"), which this unpacks once, on reading an old file."""
    if "timing" not in row:
        row["timing"] = row["metric"] in LEGACY_TIMING
    if "bucket" not in row and " · " in row["condition"]:
        cond, _, rest = row["condition"].partition(" · ")
        by, _, bucket = rest.partition(" WER ")
        row.update(condition=cond, bucket_by=by, bucket=bucket)
    return row
