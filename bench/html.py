"""A static report.html for a run: tables, plots and per-item examples side by side (audio player,
gold transcript, cascade hypothesis, each system's answer and scores). Opens offline: every asset
is a file beside it (plots as PNG, audio as WAV)."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from bench import plots
from bench.audio import write_audio
from bench.report import _abs_cell, _diff_cell, section

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}th{background:#f3f3f3}
.sig{font-weight:bold}.item{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.meta{color:#555;font-size:12px}img{max-width:640px;margin:6px;border:1px solid #eee}code{background:#f6f6f6}"""
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
    return f"<table><tr><th>system</th>{head}</tr>{body}</table>"


def _item_scores(task, item, gen, by_system) -> str:
    parts = []
    for m in task.metrics:
        if m.kind != "item" or gen is None:
            continue
        other = by_system.get(m.needs, {}).get(item.id) if m.needs else None
        context = {m.needs: other.generation if other else None} if m.needs else {}
        try:
            v = m.fn(item, gen, context)
        except Exception:
            v = None
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            parts.append(f"{m.name}={v:.2f}")
    return " ".join(parts)


def write_report(run_dir: Path, rows: list[dict], tasks: dict, per_item: dict, meta: dict) -> Path:
    """Write plots, audio examples and report.html into `run_dir`; returns the HTML path."""
    latency: dict = {}
    for (tname, cond), by_system in per_item.items():
        if cond != "clean":
            continue
        for system, recs in by_system.items():
            secs = [sum(v for k, v in r.generation.seconds.items() if k != "audio")
                    for r in recs.values() if r and r.generation]
            if secs:
                latency[(system, tname)] = sum(secs) / len(secs)
    pngs = plots.robustness(rows, run_dir) + plots.wer_buckets(rows, run_dir) + plots.quality_latency(rows, latency, run_dir)
    cfg = meta.get("config", {})
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>audiochat-bench {run_dir.name}</title>"
           f"<style>{CSS}</style></head><body><h1>audiochat-bench run {_esc(run_dir.name)}</h1>",
           f"<p class=meta>systems: {_esc(', '.join(cfg.get('systems', [])))} · tasks: {_esc(', '.join(cfg.get('tasks', [])))}"
           f" · conditions: {_esc(', '.join(cfg.get('conditions', [])))} · LLM: {_esc(cfg.get('llm') or 'default')}"
           f" · git {_esc(meta.get('git_sha'))} · {_esc(meta.get('started'))}</p>"]
    for cond in dict.fromkeys(map(section, rows)):
        sub = [r for r in rows if section(r) == cond]
        out.append(f"<h2>{_esc(cond)}</h2>" + _table([r for r in sub if not r.get("baseline")], _abs_cell))
        for b in dict.fromkeys(r["baseline"] for r in sub if r.get("baseline")):
            out.append(f"<h3>difference against {_esc(b)} (paired bootstrap; bold/* = 95% CI excludes 0)</h3>"
                       + _table([r for r in sub if r.get("baseline") == b], _diff_cell))
    if pngs:
        out.append("<h2>Plots</h2>" + "".join(f'<img src="{p.name}" alt="{_esc(p.stem)}">' for p in pngs))
    out.append("<h2>Examples (clean)</h2>")
    audio_dir = run_dir / "audio"
    for tname, (task, items) in tasks.items():
        by_system = per_item.get((tname, "clean"))
        if not by_system:
            continue
        out.append(f"<h3>{_esc(tname)}</h3>")
        for it in items[:EXAMPLES_PER_TASK]:
            player = ""
            try:
                m = it.materialized()
                if m.turn.audio is not None:
                    audio_dir.mkdir(exist_ok=True)
                    name = plots.safe(f"{tname}-{it.id}") + ".wav"
                    write_audio(audio_dir / name, m.turn.audio)
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
            out.append(f"<div class=item><b>{_esc(it.id)}</b> {player}{hist}<div>gold: {_esc(it.turn.shown)}</div>"
                       f"<div class=meta>references: {_esc(' | '.join(it.references))}</div>"
                       f"<table><tr><th>system</th><th>transcript</th><th>answer</th><th>scores</th></tr>{rows_html}</table></div>")
    out.append("<p class=meta>95% bootstrap confidence intervals in brackets. Generated by audiochat-bench; "
               f"config: <code>{_esc(json.dumps(cfg))}</code></p></body></html>")
    path = run_dir / "report.html"
    path.write_text("\n".join(out))
    return path
