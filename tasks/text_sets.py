"""Public text test sets (SQuAD/HeySQuAD JSON, NQ-open and SciTLDR JSONL) as spoken items: the
questions or passages are spoken by the project's TTS in held-out voices.

As tasks, each reads a file named after the task: `--tasks squad:PATH`, `nq-open:PATH`,
`scitldr:PATH` (PATH: a downloaded file; nothing is fetched).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from bench.types import Item, Task, first_n
from tasks.builtin import Summarization
from tasks.common import answer_metrics, items_version
from tasks.loaders import (QA_INSTRUCTION, SQUAD_FORMS, SQUAD_INSTRUCTION, SUMMARY_INSTRUCTION, DataError,
                           _lines, _need, _spoken, _unique)


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(_lines(_need(path, "JSONL file")), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def _squad_questions(path: Path) -> Iterator[tuple[dict, dict, dict]]:
    try:
        data = json.loads(_need(path, "SQuAD JSON").read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not SQuAD-1.1 JSON ({e})") from None
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                yield article, para, qa


def read_squad(path: str | Path, form: str | None = None, original: str | Path | None = None,
               limit: int | None = None, split_voice: str = "test") -> list[Item]:
    """SQuAD-1.1 JSON (SQuAD dev, or a HeySQuAD file): the question spoken by TTS.

    The passage goes into the instruction (`SQUAD_INSTRUCTION`), not a typed history turn: every
    system gets it the same way and the spoken turn is the question alone. References = the
    distinct answer texts. `form` (one of `SQUAD_FORMS`) defaults from the file name, else
    "original". HeySQuAD's transcribed forms hold ASR output of recorded questions, not what was
    said: the TTS speaks the clean question from the `original` file (default: the sibling with
    "original" in its name), which is the gold transcript; the ASR text goes to
    meta["asr_question"]. The voice is drawn from the SQuAD id: every form sounds the same.
    """
    path = Path(path)
    form = form or next((f for f in SQUAD_FORMS if f in path.name), "original")
    if form not in SQUAD_FORMS:
        raise ValueError(f"unknown SQuAD form {form!r}: use one of {SQUAD_FORMS}")
    clean: dict[str, str] = {}
    if form != "original":
        orig = Path(original) if original else path.with_name(path.name.replace(form, "original"))
        clean = {qa["id"]: qa["question"] for _, _, qa in
                 _squad_questions(_need(orig, f"original questions for the {form} file; pass original="))}
    items: list[Item] = []
    for article, para, qa in _squad_questions(path):
        if limit is not None and len(items) >= limit:
            break
        qid = qa["id"]
        meta: dict[str, Any] = {"source": "squad", "form": form, "squad_id": qid, "title": article.get("title")}
        question = qa["question"].strip()
        if form != "original":
            if qid not in clean:
                raise DataError(f"{path}: question {qid!r} is absent from the original file")
            meta["asr_question"], question = question, clean[qid].strip()
        refs = tuple(dict.fromkeys(a["text"].strip() for a in qa["answers"]))  # dedupe, keep order
        item_id = f"squad-{qid}" if form == "original" else f"squad-{form}-{qid}"
        items.append(Item(item_id, _spoken(question, f"squad-{qid}", split_voice),
                          instruction=SQUAD_INSTRUCTION.format(context=para["context"].strip()),
                          references=refs, meta=meta))
    return _unique(items, path)


def read_nq_open(path: str | Path, limit: int | None = None, split_voice: str = "test") -> list[Item]:
    """Natural Questions open (JSONL {"question", "answer": [aliases]}): the question spoken by TTS,
    references = the aliases. Ids are `nq-open-<line number>` (the file has no ids of its own)."""
    path, items = Path(path), []
    for n, r in _jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        if not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), list):
            raise DataError(f"{path}:{n}: expected {{\"question\": str, \"answer\": [str, ...]}}")
        item_id = f"nq-open-{n:04d}"
        items.append(Item(item_id, _spoken(r["question"].strip(), item_id, split_voice), instruction=QA_INSTRUCTION,
                          references=tuple(str(a) for a in r["answer"]), meta={"source": "nq_open", "line": n}))
    return _unique(items, path)


def read_scitldr(path: str | Path, limit: int | None = None, split_voice: str = "test") -> list[Item]:
    """SciTLDR (JSONL {"source": [sentences], "target": [summaries], "paper_id", ...}): the abstract
    spoken by TTS, instruction `SUMMARY_INSTRUCTION`, references = the target summaries."""
    path, items = Path(path), []
    for n, r in _jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        if not isinstance(r.get("source"), list) or not isinstance(r.get("target"), list):
            raise DataError(f"{path}:{n}: expected {{\"source\": [str, ...], \"target\": [str, ...]}}")
        text = " ".join(" ".join(s.split()) for s in r["source"] if s.strip())
        item_id = f"scitldr-{r.get('paper_id') or n}"
        items.append(Item(item_id, _spoken(text, item_id, split_voice), instruction=SUMMARY_INSTRUCTION,
                          references=tuple(t.strip() for t in r["target"]),
                          meta={"source": "scitldr", "title": r.get("title"), "line": n}))
    return _unique(items, path)


class TextSetTask(Task):
    """A public text set read from a file named on the command line (`<prefix>:PATH`), spoken by
    the TTS in voices of `split` (the file itself has no splits)."""

    prefix = ""
    about = ""

    def __init__(self, path: str, split: str = "test"):
        self.name = f"{self.prefix}:{path}"
        self.description = f"{self.about} from {path}"
        self._items = self.read(Path(path), split)
        # the items' content is the version: an edited file never reuses old outputs
        self.version = "1-" + items_version(self._items)

    def read(self, path: Path, split: str) -> list[Item]:
        raise NotImplementedError

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n(self._items, limit)


class SquadTask(TextSetTask):
    """SQuAD-1.1 or HeySQuAD questions, spoken: `--tasks squad:path/to/dev-v1.1.json` (as spoken-qa).
    The passage goes in the instruction; a HeySQuAD file's form comes from its name (`read_squad`)."""

    prefix, about = "squad", "spoken SQuAD questions over a typed passage"
    metrics = answer_metrics()

    def read(self, path, split):
        return read_squad(path, split_voice=split)


class NQOpenTask(TextSetTask):
    """Natural Questions open, spoken: `--tasks nq-open:path/to/NQ-open.dev.jsonl` (as spoken-qa).
    References are the answer aliases (`read_nq_open`)."""

    prefix, about = "nq-open", "spoken open-domain questions"
    metrics = answer_metrics()

    def read(self, path, split):
        return read_nq_open(path, split_voice=split)


class SciTLDRTask(TextSetTask):
    """SciTLDR abstracts, spoken, to summarise: `--tasks scitldr:path/to/SciTLDR-A_test.jsonl` (as summarize).
    References are the target summaries (`read_scitldr`); ROUGE-1/2/L."""

    prefix, about = "scitldr", "spoken abstracts → one-sentence summaries"
    metrics, primary = Summarization.metrics, Summarization.primary

    def read(self, path, split):
        return read_scitldr(path, split_voice=split)
