"""The project's authored data (`data/`): the built-in suites the tasks evaluate on, whose train
splits the recipes also learn from, and the instructions a system is asked under.

Both sides import this package and neither imports the other: `tasks` turns these rows into items,
`systems` recipes read the same rows for training text and dev sets and train under the very
instructions the tasks ask with. This package imports neither `tasks` nor `systems`.

`data/suites/<name>.jsonl` holds one suite, every row tagged with its `split` (train, dev or test);
`data/spoken_qa.jsonl` is the spoken-QA test set, without split tags (files without splits are test
sets).

The ASR training alphabet (`normalize`) lives here rather than beside the ASR recipe because
`suite_texts`, which removes every dev and test sentence from training text, must compare in that
alphabet, and this package may not import `systems`; `systems.asr.corpus` re-exports it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

ASR_INSTRUCTION = "Transcribe exactly what the user says. Reply with the transcript only."
QA_INSTRUCTION = "Answer the question in as few words as possible."

ALPHABET = set("abcdefghijklmnopqrstuvwxyz' ")


def normalize(text: str) -> str:
    """The ASR target alphabet: lowercase a-z, apostrophe and single spaces (training targets; the
    metric's normaliser is `bench.textnorm.normalize_english`)."""
    t = text.lower().replace("-", " ").replace("’", "'")
    t = re.sub(r"[^a-z' ]", " ", t)
    t = re.sub(r"(^| )'+|'+( |$)", " ", t)  # quotes, not apostrophes
    return " ".join(t.split())


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def split_rows(name: str, split: str) -> list[dict]:
    """The rows of one split of an authored suite (`data/suites/<name>.jsonl`), in file order."""
    return [r for r in _read(DATA / "suites" / f"{name}.jsonl") if r.get("split") == split]


def suite_texts(split: str) -> list[str]:
    """The English texts of one split of every authored file, normalised to the ASR alphabet: every
    sentence, question, source text, passage and conversation turn."""
    out = []
    for f in sorted(DATA.rglob("*.jsonl")):
        for r in _read(f):
            if r.get("split", "test") != split:
                continue
            for k in ("text", "question", "en", "passage"):
                if isinstance(r.get(k), str):
                    out.append(normalize(r[k]))
            for t in r.get("turns", []) + ([r["final"]] if isinstance(r.get("final"), dict) else []):
                out.append(normalize(t.get("text", "")))
    return [t for t in out if t]
