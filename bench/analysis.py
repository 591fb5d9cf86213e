"""The paper's analysis: items bucketed by the cascade's per-item word error rate on the spoken
turn, and every system's score in every bucket (does the end-to-end system win where ASR fails?)."""
from __future__ import annotations

from typing import Mapping, Sequence

from bench.scoring import Outputs, score_task
from bench.textnorm import item_wer
from bench.types import Item, Task

BUCKETS = (("0", 0.0, 0.0), ("(0,10]", 0.0, 0.10), ("(10,30]", 0.10, 0.30), (">30", 0.30, float("inf")))


def bucket_of(wer: float) -> str:
    for name, lo, hi in BUCKETS:
        if (wer == 0 and hi == 0) or (lo < wer <= hi):
            return name
    raise ValueError(wer)


def wer_bucket_rows(task: Task, condition: str, items: list[Item], by_system: Mapping[str, Outputs],
                    bucket_systems: Sequence[str] = ()) -> list[dict]:
    """Rows for every system and metric on each WER bucket of the items, the per-item WER being that of
    the first of `bucket_systems` present on the spoken turn; the rows carry `bucket` (e.g. ">30") and
    `bucket_by` (the system whose transcripts made the buckets)."""
    source = next((s for s in bucket_systems if s in by_system), None)
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
        if buckets.get(name):
            rows.extend(score_task(task, condition, buckets[name], by_system, extra={"bucket": name, "bucket_by": source}))
    return rows
