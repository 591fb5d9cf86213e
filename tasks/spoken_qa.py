"""Spoken QA: short questions with short gold answers, authored for this project.

Scored by SQuAD exact match and token F1 (best over gold aliases), by `accuracy` (the gold answer
appears in the response: the fair test for a chatty LLM) and by agreement with the text topline
(exact match, token F1 and corpus chrF against the topline's own answer).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from bench.types import Item, Metric, Task, Turn, first_n
from tasks import metrics as M

DATA = Path(__file__).parent / "data" / "spoken_qa.jsonl"
INSTRUCTION = "Answer the question in as few words as possible."
TOPLINE = "text"


@lru_cache(maxsize=1)
def _load() -> tuple[dict, ...]:
    return tuple(json.loads(l) for l in DATA.read_text().splitlines() if l.strip())


def _gold(fn):
    return lambda item, gen, ctx: M.best_over(fn, gen.text, item.references)


def _agree(fn):
    def score(item, gen, ctx):
        top = ctx.get(TOPLINE)
        return None if top is None else fn(gen.text, top.text)
    return score


class SpokenQA(Task):
    name = "spoken-qa"
    version = "1"
    description = "short factual questions, short gold answers (100 items, authored here)"
    metrics = (
        Metric("accuracy", "item", True, _gold(M.contains_answer)),
        Metric("exact_match", "item", True, _gold(M.exact_match)),
        Metric("f1", "item", True, _gold(M.token_f1)),
        Metric("agree_em", "item", True, _agree(M.exact_match), needs=TOPLINE),
        Metric("agree_f1", "item", True, _agree(M.token_f1), needs=TOPLINE),
        Metric("agree_chrf", "corpus", True, _agree(M.chrf_statistics), M.chrf_from_statistics, needs=TOPLINE),
    )

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n((Item(id=r["id"], turn=Turn("user", transcript=r["question"]),
                             instruction=INSTRUCTION, references=tuple(r["answers"]))
                        for r in _load()), limit)
