"""A static report.html for a run that leads with the question: the headline and verdicts (does
each end-to-end system beat the cascade, and where?), then the robustness curves and the WER-bucket
plot, then the items where the systems disagree most (audio player, gold, each system's transcript
and answer), then every table, each in its own scroll box so nothing is cut off at any window width.
Opens offline: every asset is a file beside it (plots as PNG, audio as WAV)."""
from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

from bench import headline as H
from bench import plots
from bench.profile import model_seconds
from bench.report import _abs_cell, _diff_cell, section, write_if_changed

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0}.scroll{overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}th{background:#f3f3f3}
.sig{font-weight:bold}.best{font-weight:bold;background:#e8f4e8}.item{border:1px solid #ddd;border-radius:6px;
padding:8px 12px;margin:10px 0;overflow-x:auto}.meta{color:#555;font-size:12px}
.plots img{max-width:100%;width:560px;margin:6px;border:1px solid #eee}code{background:#f6f6f6;word-break:break-all}
.verdicts li{margin:4px 0}.better{color:#1a7f37}.worse{color:#b42318}details{margin:1em 0}summary{cursor:pointer}"""
EXAMPLES_PER_TASK = 6


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _table(rows: list[dict], cell) -> str:
    cols = list(dict.fromkeys((r["task"], r["metric"]) for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    idx = {(r["system"], r["task"], r["metric"]): r for r in rows}
    head = "".join(f"<th>{_esc(t)}<br>{_esc(m)} {'↑' if idx[next(s for s in systems if (s, t, m) in idx), t, m]['higher_is_better'] else '↓'}</th>"
                   for t, m in cols)
    body = ""
    for s in systems:
        cells = "".join(f"<td{' class=sig' if (r := idx.get((s, t, m))) and r.get('significant') else ''}>"
                        f"{_esc(cell(r))}</td>" for t, m in cols)
        body += f"<tr><th>{_esc(s)}</th>{cells}</tr>"
    return f"<div class=scroll><table><tr><th>system</th>{head}</tr>{body}</table></div>"


def headline_html(h: H.Headline) -> str:
    """The headline table (best per column marked) and one verdict per compared system and baseline."""
    if not h.columns:
        return "<p>No rows to show.</p>"
    head = "".join(f"<th>{_esc(t)}<br><span class=meta>{_esc(m)} {'↑' if hib else '↓'} · n {n}</span></th>"
                   for t, m, hib, n in h.columns)
    body = ""
    for s in h.systems:
        cells = "".join(f"<td{' class=best' if (s, t) in h.best else ''}>{_esc(H.cell_text(h.cells.get((s, t))))}</td>"
                        for t, *_ in h.columns)
        body += f"<tr><th>{_esc(s)}{' <span class=meta>(topline)</span>' if s in h.toplines else ''}</th>{cells}</tr>"
    out = [f"<h2>Headline ({_esc(h.condition)})</h2><p class=meta>value ±half-width of the 95% bootstrap CI; "
           f"highlighted: best per column{' other than the topline' if h.toplines else ''}</p>"
           f"<div class=scroll><table><tr><th>system</th>{head}</tr>{body}</table></div>"]
    if h.verdicts:
        items = ""
        for v in h.verdicts:
            parts = H.verdict_parts(v, h.condition)
            marked = "; ".join(f"<span class={'better' if p.startswith('better') else 'worse' if p.startswith('worse') else 'ns'}>"
                               f"{_esc(p)}</span>" for p in parts) or "nothing to compare"
            items += f"<li><b>{_esc(v.system)}</b> vs <b>{_esc(v.baseline)}</b>: {marked}</li>"
        out.append("<h2>Verdicts</h2><p class=meta>paired bootstrap differences, system − baseline (95% CI where "
                   f"better); n.s.: the interval holds 0</p><ul class=verdicts>{items}</ul>")
    return "".join(out)


def item_value(metric, item, gen, context) -> float | None:
    """One item's value of a metric: an item metric's own, a corpus metric's aggregate of that
    item's statistics alone (its sentence WER, chrF...). None where it does not apply."""
    from bench.scoring import item_statistic

    if gen is None:
        return None
    try:
        v = item_statistic(metric, item, gen, context)  # (the scoring's, memoised)
        if v is None:
            return None
        v = float(metric.aggregate(v)) if metric.aggregate else float(v[0])
    except (ValueError, TypeError, ZeroDivisionError, KeyError):
        return None
    return v if math.isfinite(v) else None


def _context(metric, item, by_system) -> dict:
    if not metric.needs:
        return {}
    other = by_system.get(metric.source, {}).get(item.id)
    return {metric.needs: other.generation if other else None}


def disagreements(task, items, by_system, metric_name: str, k: int = EXAMPLES_PER_TASK) -> list:
    """The `k` items on which the systems' values of `metric_name` spread the most, most first; ties
    keep the task's order. A failed answer counts one unit below the worst answer given."""
    metric = next((m for m in task.metrics if m.name == metric_name), None)
    if metric is None:
        return list(items[:k])
    spread = []
    for pos, it in enumerate(items):
        vals = []
        for recs in by_system.values():
            r = recs.get(it.id)
            v = item_value(metric, it, r.generation if r else None, _context(metric, it, by_system))
            vals.append(v)
        got = [v for v in vals if v is not None]
        if not got:
            continue
        worst = min(got) if metric.higher_is_better else max(got)
        if None in vals:  # a failed answer: worse than any given, and a reason to look
            got.append(worst - 1 if metric.higher_is_better else worst + 1)
        spread.append((-(max(got) - min(got)), pos, it))
    return [it for *_, it in sorted(spread)[:k]]


def _item_scores(task, item, gen, by_system) -> str:
    parts = []
    for m in task.metrics:
        if m.timing:
            continue
        v = item_value(m, item, gen, _context(m, item, by_system))
        if v is not None:
            parts.append(f"{m.name}={v:.2f}")
    return " ".join(parts)


def _wav(audio) -> bytes:
    """The 16-bit WAV file of a clip (bench.audio.write_audio's), as bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.samples, audio.sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _example(run_dir: Path, tname: str, task, it, by_system) -> str:
    player = ""
    try:
        m = it.materialized()
        if m.turn.audio is not None:
            (run_dir / "audio").mkdir(exist_ok=True)
            name = plots.safe(f"{tname}-{it.id}") + ".wav"
            write_if_changed(run_dir / "audio" / name, _wav(m.turn.audio))
            player = f'<audio controls preload=none src="audio/{_esc(name)}"></audio>'
    except Exception as e:  # bad audio: say so instead of a player
        player = f"<span class=meta>audio unavailable: {_esc(e)}</span>"
    hist = "".join(f"<div class=meta>{_esc(t.role)} ({'spoken' if t.spoken else 'typed'}): {_esc(t.shown)}</div>"
                   for t in it.history)
    rows_html = ""
    for system, recs in by_system.items():
        r = recs.get(it.id)
        g = r.generation if r else None
        answer = _esc(g.text) if g else f"<i>failed: {_esc(r.error if r else 'missing')}</i>"
        rows_html += (f"<tr><th>{_esc(system)}</th><td>{_esc(g.transcript) if g and g.transcript else ''}</td>"
                      f"<td>{answer}</td><td>{_esc(_item_scores(task, it, g, by_system))}</td></tr>")
    return (f"<div class=item><b>{_esc(it.id)}</b> {player}{hist}<div>gold: {_esc(it.turn.shown)}</div>"
            f"<div class=meta>references: {_esc(' | '.join(it.references))}</div>"
            f"<table><tr><th>system</th><th>transcript</th><th>answer</th><th>scores</th></tr>{rows_html}</table></div>")


def write_report(run_dir: Path, rows: list[dict], tasks: dict, per_item: dict, meta: dict) -> Path:
    """Write plots, audio examples and report.html into `run_dir` (each file only where its bytes
    change; plots come from the cache of drawn plots where their numbers did not change, see
    bench/plots.py); returns the HTML path."""
    latency: dict = {}
    for (tname, cond), by_system in per_item.items():
        if cond != "clean":
            continue
        for system, recs in by_system.items():
            secs = [model_seconds(r.generation.seconds) for r in recs.values() if r and r.generation]
            if secs:
                latency[(system, tname)] = sum(secs) / len(secs)
    curves = plots.robustness(rows, run_dir) + plots.wer_buckets(rows, run_dir)
    latency_pngs = plots.quality_latency(rows, latency, run_dir)
    cfg = meta.get("config", {})
    h = H.from_config(rows, cfg)
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>audiochat-bench {run_dir.name}</title>"
           f"<style>{CSS}</style></head><body><h1>Does the end-to-end system beat the cascade, and where?</h1>",
           f"<p class=meta>run {_esc(run_dir.name)} · systems: {_esc(', '.join(cfg.get('systems', [])))} · tasks: "
           f"{_esc(', '.join(cfg.get('tasks', [])))} · conditions: {_esc(', '.join(cfg.get('conditions', [])))}"
           f" · LLM: {_esc(cfg.get('llm') or 'default')} · git {_esc(meta.get('git_sha'))} · {_esc(meta.get('started'))}</p>",
           headline_html(h)]
    if curves:
        out.append("<h2>Robustness and WER buckets</h2><div class=plots>"
                   + "".join(f'<img src="{p.name}" alt="{_esc(p.stem)}">' for p in curves) + "</div>")
    out.append("<h2>Where the systems disagree most (clean)</h2>")
    prim = {t: m for t, m, *_ in h.columns}
    for tname, (task, items) in tasks.items():
        by_system = per_item.get((tname, "clean"))
        if not by_system:
            continue
        metric = prim.get(tname) or task.primary_metric()
        out.append(f"<h3>{_esc(tname)} <span class=meta>(by the spread of {_esc(metric)} across systems)</span></h3>")
        out += [_example(run_dir, tname, task, it, by_system) for it in disagreements(task, items, by_system, metric)]
    if latency_pngs:
        out.append("<h2>Quality against latency</h2><div class=plots>"
                   + "".join(f'<img src="{p.name}" alt="{_esc(p.stem)}">' for p in latency_pngs) + "</div>")
    out.append("<h2>Every metric</h2><p class=meta>also in table.md and table.csv; 95% bootstrap CIs in brackets</p>")
    for cond in dict.fromkeys(map(section, rows)):
        sub = [r for r in rows if section(r) == cond]
        parts = [_table([r for r in sub if not r.get("baseline")], _abs_cell)]
        for b in dict.fromkeys(r["baseline"] for r in sub if r.get("baseline")):
            parts.append(f"<h4>difference against {_esc(b)} (paired bootstrap; bold/* = 95% CI excludes 0)</h4>"
                         + _table([r for r in sub if r.get("baseline") == b], _diff_cell))
        out.append(f"<details{' open' if cond == h.condition else ''}><summary><b>{_esc(cond)}</b></summary>"
                   + "".join(parts) + "</details>")
    out.append("<p class=meta>Generated by audiochat-bench; config: "
               f"<code>{_esc(json.dumps(cfg))}</code></p></body></html>")
    path = run_dir / "report.html"
    write_if_changed(path, "\n".join(out))
    return path
