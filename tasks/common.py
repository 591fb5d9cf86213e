"""What several task modules share: the short-answer metric set with its agreement with the topline,
the digest that versions a task read from data, and where the public evaluation data lives."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from bench.types import TOPLINE, Item, Metric, Turn
from tasks import metrics as M

# Two folders, two variables: the public evaluation data beside the checkout (speech/, text/: the
# `real` suite), and local copies of Hugging Face benchmarks (`run --data-dir`, tasks/benchmarks.py).
ENV_PUBLIC_DATA = "AUDIOCHAT_BENCH_PUBLIC_DATA"
ENV_DATA_DIR = "AUDIOCHAT_BENCH_DATA_DIR"
ENV_PUBLIC_DATA_OLD = "AUDIOCHAT_BENCH_DATA"  # $AUDIOCHAT_BENCH_PUBLIC_DATA's old name: still read, with a warning


def agree(fn):
    """An item metric comparing a system's answer with the topline's answer to the same item."""
    def score(item, gen, ctx):
        top = ctx.get(TOPLINE)
        return None if top is None else fn(gen.text, top.text)
    return score


def gold(fn):
    return lambda item, gen, ctx: M.best_over(fn, gen.text, item.references)


def answer_metrics() -> tuple[Metric, ...]:
    """Short-answer metrics: gold accuracy (answer contained), SQuAD EM/F1, agreement with the topline."""
    return (
        Metric("accuracy", "item", True, gold(M.contains_answer)),
        Metric("exact_match", "item", True, gold(M.exact_match)),
        Metric("f1", "item", True, gold(M.token_f1)),
        Metric("agree_em", "item", True, agree(M.exact_match), needs=TOPLINE),
        Metric("agree_f1", "item", True, agree(M.token_f1), needs=TOPLINE),
        Metric("agree_chrf", "corpus", True, agree(M.chrf_statistics), M.chrf_from_statistics, needs=TOPLINE),
    )


def items_version(items: list[Item]) -> str:
    """A digest of everything the items show a system (ids, instructions, turns with their voices,
    references): part of the version of a task read from a user's file or dataset, which has no
    version of its own, so that changed data never reuses old outputs."""
    def turn(t: Turn) -> list:
        return [t.role, t.text, t.transcript, None if t.audio is None else t.audio.origin]

    view = [[it.id, it.instruction, [turn(t) for t in (*it.history, it.turn)], list(it.references)] for it in items]
    return hashlib.sha256(json.dumps(view, ensure_ascii=False).encode()).hexdigest()[:12]


def public_data_dir() -> Path:
    """The public evaluation data: $AUDIOCHAT_BENCH_PUBLIC_DATA (or its deprecated old name,
    $AUDIOCHAT_BENCH_DATA), else ../shared/data beside the checkout."""
    given = os.environ.get(ENV_PUBLIC_DATA)
    if not given and os.environ.get(ENV_PUBLIC_DATA_OLD):
        warnings.warn(f"${ENV_PUBLIC_DATA_OLD} is deprecated (it read too like ${ENV_DATA_DIR}, another folder): "
                      f"set ${ENV_PUBLIC_DATA} instead", FutureWarning, stacklevel=2)
        given = os.environ[ENV_PUBLIC_DATA_OLD]
    d = Path(given or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not d.is_dir():
        other = os.environ.get(ENV_DATA_DIR)
        hint = (f" (${ENV_DATA_DIR}={other} is another folder: local copies of Hugging Face benchmarks, "
                "as `run --data-dir`)" if other else "")
        raise FileNotFoundError(f"public evaluation data not found at {d}; set {ENV_PUBLIC_DATA} to the folder "
                                f"holding speech/ and text/ (these tasks are optional){hint}")
    return d
