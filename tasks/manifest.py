"""Your own data as a task of any kind: `--tasks manifest:path/to/items.jsonl`.

The manifest (format: tasks/loaders.py) names its kind (`qa`, `asr`, `translate` with a target,
`summarize`, `open`; none: `qa`), and the task scores it with that kind's metric set, the very
tuples the built-in tasks use (one definition per metric set): ASR's corpus WER/CER with the pinned
normaliser, Translation's sacrebleu BLEU/chrF (signatures recorded beside the run), Summarization's
ROUGE, the short-answer metrics. `kind_of` says which kind a built-in task is, for `data export`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from bench.types import TOPLINE, Item, Metric, Task, first_n
from tasks import metrics as M
from tasks.builtin import ASR, Summarization, Translation
from tasks.common import agree, answer_metrics


def _with_refs(fn):
    """An item metric against the references, not applicable (None) to an item without any."""
    return lambda it, g, c: fn(g.text, it.references) if it.references else None


# open-ended answers: no n-gram metric is a fair judge of them (name a --judge); these are what is
# measurable without one: overlap with references where a line has them, agreement with the topline
OPEN_METRICS = (
    Metric("rouge_l", "item", True, _with_refs(lambda text, refs: M.rouge(text, refs, "rougeL"))),
    Metric("chrf", "corpus", True,
           lambda it, g, c: M.chrf_statistics(g.text, it.references[0]) if it.references else None,
           M.chrf_from_statistics),
    Metric("agree_chrf", "corpus", True, agree(M.chrf_statistics), M.chrf_from_statistics, needs=TOPLINE),
)

QA_METRICS = answer_metrics()
METRICS = {"qa": QA_METRICS, "asr": ASR.metrics, "translate": Translation.metrics,
           "summarize": Summarization.metrics, "open": OPEN_METRICS}
JUDGED = ("summarize", "open")  # kinds whose answers a judge (`run --judge`) scores


def kind_of(task: Task) -> tuple[str, str | None]:
    """(kind, target language) of a task's items, from its metric set: what `data export` writes in
    a manifest's header so that the exported file scores like the task it came from."""
    if getattr(task, "kind", None) in METRICS:
        return task.kind, getattr(task, "target", None)
    names = tuple(m.name for m in task.metrics)
    for kind, metrics in METRICS.items():
        if names == tuple(m.name for m in metrics):
            return kind, (getattr(task, "target", None) if kind == "translate" else None)
    if task.transcript_only:
        return "asr", None
    return "qa", None  # scoring tasks over QA items (response-ppl) and anything else: short answers


class ManifestTask(Task):
    """Your own data: `--tasks manifest:path/to/items.jsonl` (format: tasks/loaders.py), scored as
    the manifest's kind says (qa, asr, translate, summarize, open)."""

    def __init__(self, path: str, split: str = "test"):
        from tasks.loaders import parse_manifest

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"manifest {path!r} not found")
        manifest = parse_manifest(self.path, split_voice=split)
        self.kind, self.target = manifest.kind, manifest.target
        self.name = f"manifest:{path}"
        self.description = f"{self.kind} items from {path}" + (f" (→ {self.target})" if self.target else "")
        self.metrics = METRICS[self.kind]
        self.transcript_only = self.kind == "asr"  # like the built-in ASR task: only the transcript is scored
        self.judged = self.kind in JUDGED
        if self.kind == "translate":
            self.signatures = M.signatures  # sacrebleu signatures, recorded in config.json
        # the file's content is part of the version, so an edited manifest never reuses old outputs
        # (a manifest without a kind keeps the version it had before kinds existed)
        self.version = "1-" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self._items: list[Item] = manifest.items

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n(self._items, limit)
