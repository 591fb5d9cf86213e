"""The paper's analysis: items bucketed by the cascade's per-item word error rate on the spoken
turn, and every system's score in every bucket (does the end-to-end system win where ASR fails?)."""
from __future__ import annotations

import re
from typing import Mapping

from bench.scoring import Outputs, score_metric
from bench.types import Item, Task

BUCKETS = (("0", 0.0, 0.0), ("(0,10]", 0.0, 0.10), ("(10,30]", 0.10, 0.30), (">30", 0.30, float("inf")))
BUCKET_SYSTEMS = ("cascade", "cascade-whisper")  # whose transcripts define the buckets (first present)


def _words(s: str) -> list[str]:
    return re.sub(r"[^\w' ]", " ", s.lower()).split()


def item_wer(hypothesis: str, reference: str) -> float:
    import jiwer

    ref, hyp = " ".join(_words(reference)), " ".join(_words(hypothesis))
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or "<empty>"))


def bucket_of(wer: float) -> str:
    for name, lo, hi in BUCKETS:
        if (wer == 0 and hi == 0) or (lo < wer <= hi):
            return name
    raise ValueError(wer)


def wer_bucket_rows(task: Task, condition: str, items: list[Item], by_system: Mapping[str, Outputs]) -> list[dict]:
    """Rows with condition '<condition> · <system> WER <bucket>' for every system and metric."""
    source = next((s for s in BUCKET_SYSTEMS if s in by_system), None)
    if source is None or task.transcript_only or task.mode != "generate":
        return []
    buckets: dict[str, list[Item]] = {}
    for it in items:
        g = by_system[source].get(it.id)
        if g is None or g.transcript is None or not it.turn.transcript:
            continue
        buckets.setdefault(bucket_of(item_wer(g.transcript, it.turn.transcript)), []).append(it)
    rows = []
    for name, _, _ in BUCKETS:
        sub = buckets.get(name, [])
        if not sub:
            continue
        for system, outputs in by_system.items():
            for metric in task.metrics:
                context = {metric.needs: by_system[metric.needs]} if metric.needs in by_system else {}
                res = score_metric(metric, sub, outputs, context)
                if res is not None:
                    rows.append({"system": system, "task": task.name, "task_version": task.version,
                                 "condition": f"{condition} · {source} WER {name}", "metric": metric.name,
                                 "baseline": None, "higher_is_better": metric.higher_is_better, **res})
    return rows
