"""Public speech benchmarks by name, read through Hugging Face `datasets` (the optional `hub` extra):

    voicebench:sd-qa[:ACCENT]  voicebench:openbookqa  voicebench:mmsu[:SUBJECT]  voicebench:ifeval
    voicebench:alpacaeval      voicebench:commoneval   heysquad:human
    librispeech:test-clean     librispeech:test-other  covost2:en-de  fleurs:en

Where the data comes from, in this order: a local copy under `data_dir` (`run --data-dir DIR`, or
$AUDIOCHAT_BENCH_DATA_DIR), at DIR/<owner>/<name> or DIR/<name>, in the repository's own file layout
(`huggingface-cli download --repo-type dataset REPO --local-dir DIR/REPO`: parquet files per config
and split, or a `save_to_disk` folder per split); else `datasets.load_dataset(REPO, CONFIG)`, which
reads the Hugging Face cache (offline with HF_DATASETS_OFFLINE=1) or the hub. Nothing else is tried.

Audio is never decoded while listing: each item holds a reference to its row, decoded with
soundfile on first use (the `audio` column is read undecoded, so `datasets` needs no torchcodec).
Column names and configs follow each dataset's card (Hugging Face, as cited per reader below).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from bench.types import AudioRef, Item, Task, Turn, first_n
from tasks import metrics as M
from tasks import voicebench as V
from tasks.builtin import ASR, Translation
from tasks.common import ENV_DATA_DIR, answer_metrics, items_version, public_data_dir
from tasks.hf import row_audio
from tasks.loaders import (ASR_INSTRUCTION, LANGUAGE_NAMES, SQUAD_INSTRUCTION, TRANSLATE_INSTRUCTION, DataError,
                           _unique)
from tasks.manifest import OPEN_METRICS
from tasks.text_sets import read_squad

HF_SPLIT = {"test": "test", "dev": "validation", "train": "train"}


@dataclass(frozen=True)
class Benchmark:
    """A public benchmark: its task names, where it lives, its licence and how to get it."""

    names: str  # the task names, as `list` shows them
    repo: str  # Hugging Face dataset id
    licence: str
    about: str
    probe: tuple[str | None, str]  # a (config, split) whose presence means "available locally"


BENCHMARKS = {
    "voicebench": Benchmark("voicebench:sd-qa|openbookqa|mmsu|ifeval|alpacaeval|commoneval", "hlt-lab/voicebench",
                            "Apache-2.0 (dataset card)", "VoiceBench: spoken QA, MCQ, instruction following, open",
                            ("sd-qa", "usa")),
    "heysquad": Benchmark("heysquad:human", "yijingwu/HeySQuAD_human", "CC BY 4.0",
                          "HeySQuAD: SQuAD questions recorded by people (validation split)", (None, "validation")),
    "librispeech": Benchmark("librispeech:test-clean|test-other", "openslr/librispeech_asr", "CC BY 4.0",
                             "LibriSpeech read audiobooks: ASR", ("clean", "test")),
    "covost2": Benchmark("covost2:en-de|en-ca|en-ja|...", "fixie-ai/covost2",
                         "CC BY-NC 4.0 (translations), CC0 (Common Voice audio)",
                         "CoVoST 2 en→x speech translation (audio embedded; facebook/covost2 needs Common Voice)",
                         ("en_de", "test")),
    "fleurs": Benchmark("fleurs:en|fr|de|es|LANG_REGION", "google/fleurs", "CC BY 4.0",
                        "FLEURS read Wikipedia sentences, 102 languages: ASR", ("en_us", "test")),
}


def data_dir(explicit: str | Path | None = None) -> Path | None:
    d = explicit or os.environ.get(ENV_DATA_DIR)
    return Path(d) if d else None


# ------------------------------------------------------------------ finding and opening a dataset
def _local_files(root: Path, config: str | None, split: str) -> tuple[str, list[Path]] | None:
    """("parquet" | "arrow" | "disk", files) of one config/split in a local copy, None if absent."""
    c = f"{config}/" if config else ""
    for kind, patterns in (("parquet", [f"{c}{split}-*.parquet", f"{c}{split}/*.parquet", f"{c}{split}.parquet"]
                            + ([] if config else [f"data/{split}-*.parquet"])),
                           ("arrow", [f"{c}{split}-*.arrow", f"{c}{split}/data-*.arrow"])):
        for pattern in patterns:
            files = sorted(root.glob(pattern))
            if files:
                if kind == "arrow" and (files[0].parent / "state.json").exists():
                    return "disk", [files[0].parent]  # a save_to_disk folder
                return kind, files
    return None


def _roots(repo: str, explicit: str | Path | None) -> list[Path]:
    d = data_dir(explicit)
    return [] if d is None else [d / repo, d / repo.split("/")[-1]]


def locate(repo: str, config: str | None, split: str, explicit: str | Path | None = None) -> str | None:
    """Where a config/split is available without the hub: a local copy, or the Hugging Face cache."""
    for root in _roots(repo, explicit):
        if _local_files(root, config, split):
            return str(root)
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    cached = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"
    return f"Hugging Face cache ({cached})" if cached.is_dir() else None


def open_dataset(repo: str, config: str | None, split: str, explicit: str | Path | None = None) -> Any:
    """The `datasets.Dataset` of one config/split: a local copy first, else `load_dataset`."""
    try:
        import datasets
    except ImportError:
        raise ImportError("public benchmarks need the Hugging Face `datasets` package: "
                          "pip install 'audiochat-bench[hub]' (or pip install datasets)") from None
    for root in _roots(repo, explicit):
        found = _local_files(root, config, split)
        if found:
            kind, files = found
            if kind == "disk":
                return datasets.load_from_disk(str(files[0]))
            return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline without a cache, a gated set, a wrong config: say how to get it
        where = f" (looked under {', '.join(map(str, _roots(repo, explicit)))})" if _roots(repo, explicit) else ""
        raise DataError(f"{repo} {config or ''}/{split} is not available{where}: {str(e).splitlines()[0] if str(e) else e!r}. "
                        f"Get it with `huggingface-cli download --repo-type dataset {repo} --local-dir DIR/{repo}` "
                        f"and pass --data-dir DIR (or set ${ENV_DATA_DIR})") from None


def rows(ds: Any, columns: list[str], audio: str = "audio", origin: str = "") -> list[tuple[dict, AudioRef]]:
    """Every row's text `columns` (read without touching audio) and a lazy reference to its audio."""
    from datasets import Audio as AudioFeature

    missing = sorted(set(columns + [audio]) - set(ds.column_names))
    if missing:
        raise DataError(f"{origin}: no column(s) {missing}; columns are {ds.column_names}")
    raw = ds.cast_column(audio, AudioFeature(decode=False))
    text = raw.select_columns(columns).to_list()
    return [(r, AudioRef(partial(row_audio, raw, i, audio, f"{origin}[{i}]"), origin=f"{origin}[{i}]"))
            for i, r in enumerate(text)]


class BenchmarkTask(Task):
    """A public benchmark read by `read()` into items once; its version is the items' digest, so a
    changed copy never reuses old outputs."""

    repo = ""

    def __init__(self, spec: str, split: str = "test", data_dir: str | None = None):
        self.spec, self.split, self.data_dir = spec, split, data_dir
        self.configure(spec)
        self._items = _unique(self.read(), self.name)
        self.version = f"1-{items_version(self._items)}"

    def configure(self, spec: str) -> None:
        raise NotImplementedError

    def read(self) -> list[Item]:
        raise NotImplementedError

    def open(self, config: str | None, split: str, columns: list[str]) -> list[tuple[dict, AudioRef]]:
        return rows(open_dataset(self.repo, config, split, self.data_dir), columns,
                    origin=f"{self.repo}:{config or 'default'}/{split}")

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n(self._items, limit)


def _spec_error(prefix: str, spec: str, choices) -> ValueError:
    return ValueError(f"{prefix}:{spec}: unknown; use {prefix}:" + f", {prefix}:".join(choices))


# ------------------------------------------------------------------ VoiceBench
# hlt-lab/voicebench dataset card (README dataset_info): every config has `audio` and `prompt` (the
# spoken text); sd-qa and the MCQ sets add `reference`; ifeval adds `key`, `instruction_id_list`, `kwargs`.
# sd-qa's splits are accents (usa, aus, gbr, ind_n, ind_s, irl, kenya, nga, nzl, phl, zaf), mmsu's are
# subjects; the others have one split, `test`. VoiceBench prompts systems with the audio alone (no
# system prompt), as here.
SD_QA_ACCENTS = ("usa", "aus", "gbr", "ind_n", "ind_s", "irl", "kenya", "nga", "nzl", "phl", "zaf")
MMSU_SUBJECTS = ("biology", "business", "chemistry", "economics", "engineering", "health", "history", "law",
                 "other", "philosophy", "physics", "psychology")
VOICEBENCH = ("sd-qa", "openbookqa", "mmsu", "ifeval", "alpacaeval", "commoneval")


class VoiceBench(BenchmarkTask):
    """VoiceBench subsets (hlt-lab/voicebench) with their own scoring rules (tasks/voicebench.py):
    `voicebench:sd-qa[:ACCENT]` (QA accuracy), `voicebench:openbookqa`, `voicebench:mmsu[:SUBJECT]`
    (option letter, strict), `voicebench:ifeval` (rule checks), `voicebench:alpacaeval|commoneval`
    (open-ended: agreement with the topline, and a judge when named)."""

    repo = BENCHMARKS["voicebench"].repo

    def configure(self, spec):
        config, _, sub = spec.partition(":")
        if config not in VOICEBENCH:
            raise _spec_error("voicebench", spec, VOICEBENCH)
        allowed = {"sd-qa": SD_QA_ACCENTS, "mmsu": MMSU_SUBJECTS}.get(config, ())
        if sub and sub not in allowed:
            raise ValueError(f"voicebench:{spec}: {config} has " + (f"splits {', '.join(allowed)}" if allowed
                                                                    else "no sub-splits"))
        self.config = config
        self.splits = [sub] if sub else ["usa"] if config == "sd-qa" else list(MMSU_SUBJECTS) \
            if config == "mmsu" else ["test"]
        self.name = f"voicebench:{spec}"
        self.kind = {"sd-qa": "qa", "ifeval": "ifeval", "openbookqa": "mcq", "mmsu": "mcq"}.get(config, "open")
        self.metrics = {"qa": answer_metrics(), "mcq": V.MCQ_METRICS, "ifeval": V.IFEVAL_METRICS}.get(
            self.kind, OPEN_METRICS)
        self.judged = self.kind == "open"
        self.description = f"VoiceBench {config} ({', '.join(self.splits) if len(self.splits) < 3 else 'all splits'})"

    def read(self):
        extra = {"qa": ["reference"], "mcq": ["reference"], "ifeval": ["key", "instruction_id_list", "kwargs"]}
        items = []
        for split in self.splits:
            for i, (r, audio) in enumerate(self.open(self.config, split, ["prompt"] + extra.get(self.kind, []))):
                item_id = f"voicebench-{self.config}-{split}-{r['key'] if self.kind == 'ifeval' else f'{i:04d}'}"
                refs: tuple[str, ...] = ()
                meta: dict[str, Any] = {"source": self.repo, "config": self.config, "split": split, "index": i}
                if self.kind in ("qa", "mcq"):
                    refs = (str(r["reference"]).strip(),)
                    if self.kind == "mcq" and refs[0] not in "ABCD":
                        raise DataError(f"{self.repo}:{self.config}/{split}[{i}]: reference {refs[0]!r} is not A-D")
                if self.kind == "ifeval":
                    meta.update(instruction_id_list=list(r["instruction_id_list"]), kwargs=list(r["kwargs"]))
                items.append(Item(item_id, Turn("user", audio=audio, transcript=r["prompt"]), references=refs,
                                  meta=meta))
        return items


# ------------------------------------------------------------------ HeySQuAD
class HeySQuAD(BenchmarkTask):
    """HeySQuAD's questions as people recorded them (`heysquad:human`: yijingwu/HeySQuAD_human, its
    validation split for `test`), answered over the typed passage, short-answer metrics. The
    topline reads the question as written; the human transcript of the recording is in
    meta["human_transcript"]. Unanswerable questions (no answer) are left out."""

    repo = BENCHMARKS["heysquad"].repo

    def configure(self, spec):
        if spec != "human":
            raise _spec_error("heysquad", spec, ["human"])
        self.name, self.description = "heysquad:human", "HeySQuAD: recorded SQuAD questions over a typed passage"
        self.metrics = answer_metrics()

    def read(self):
        # dataset card: audio, transcription, question, context, answers [{answer_start, text}], is_impossible,
        # id, plausible_answers; splits train, validation
        items = []
        split = HF_SPLIT.get(self.split, self.split) if self.split != "test" else "validation"
        for i, (r, audio) in enumerate(self.open(None, split, ["id", "question", "transcription", "context", "answers"])):
            refs = tuple(dict.fromkeys(a["text"].strip() for a in r["answers"] or [] if a["text"].strip()))
            if not refs:
                continue
            items.append(Item(f"heysquad-human-{r['id']}-{i}", Turn("user", audio=audio, transcript=r["question"].strip()),
                              instruction=SQUAD_INSTRUCTION.format(context=r["context"].strip()), references=refs,
                              meta={"source": self.repo, "squad_id": r["id"], "human_transcript": r["transcription"]}))
        return items


# ------------------------------------------------------------------ ASR: LibriSpeech, FLEURS
class _ASRBenchmark(BenchmarkTask):
    metrics = ASR.metrics
    transcript_only = True
    kind = "asr"

    def asr_items(self, config, split, text_col, transcript_col, id_of: Callable[[dict, int], str]):
        cols = list(dict.fromkeys([text_col, transcript_col] + (["id"] if "id" not in (text_col,) else [])))
        return [Item(id_of(r, i), Turn("user", audio=audio, transcript=r[transcript_col]), instruction=ASR_INSTRUCTION,
                     references=(r[text_col],), meta={"source": self.repo, "config": config, "split": split, "index": i})
                for i, (r, audio) in enumerate(self.open(config, split, cols))]


class LibriSpeech(_ASRBenchmark):
    """LibriSpeech (openslr/librispeech_asr): `librispeech:test-clean|test-other|dev-clean|dev-other`,
    corpus WER/CER. Dataset card: configs clean/other, columns file, audio, text, speaker_id, chapter_id, id."""

    repo = BENCHMARKS["librispeech"].repo

    def configure(self, spec):
        part, _, config = spec.partition("-")
        if part not in ("test", "dev") or config not in ("clean", "other"):
            raise _spec_error("librispeech", spec, ["test-clean", "test-other", "dev-clean", "dev-other"])
        self.config, self.hf_split = config, HF_SPLIT[part]
        self.name, self.description = f"librispeech:{spec}", f"LibriSpeech {spec}: read audiobooks, WER"

    def read(self):
        return self.asr_items(self.config, self.hf_split, "text", "text", lambda r, i: f"librispeech-{r['id']}")


FLEURS_CONFIGS = {"en": "en_us", "fr": "fr_fr", "de": "de_de", "es": "es_419", "it": "it_it", "pt": "pt_br",
                  "nl": "nl_nl", "ja": "ja_jp", "zh": "cmn_hans_cn"}


class Fleurs(_ASRBenchmark):
    """FLEURS (google/fleurs): `fleurs:en` (or any config, `fleurs:sw_ke`), corpus WER/CER against the
    normalised `transcription`; the topline reads `raw_transcription`. Dataset card: columns id,
    num_samples, path, audio, transcription, raw_transcription, gender, lang_id, language, lang_group_id.
    FLEURS ids repeat (one sentence, several speakers), so items are numbered by row."""

    repo = BENCHMARKS["fleurs"].repo

    def configure(self, spec):
        self.config = FLEURS_CONFIGS.get(spec, spec)
        if "_" not in self.config:
            raise _spec_error("fleurs", spec, list(FLEURS_CONFIGS) + ["LANG_REGION (e.g. sw_ke)"])
        self.name, self.description = f"fleurs:{spec}", f"FLEURS {self.config} ({self.split}): read speech, WER"

    def read(self):
        split = HF_SPLIT.get(self.split, self.split)
        return self.asr_items(self.config, split, "transcription", "raw_transcription",
                              lambda r, i: f"fleurs-{self.config}-{split}-{i:05d}")


# ------------------------------------------------------------------ CoVoST 2
COVOST_TARGETS = {"de": "de", "ca": "ca", "zh": "zh-CN", "fa": "fa", "et": "et", "mn": "mn", "tr": "tr", "ar": "ar",
                  "sv": "sv-SE", "lv": "lv", "sl": "sl", "ta": "ta", "ja": "ja", "id": "id", "cy": "cy"}


class CoVoST2(BenchmarkTask):
    """CoVoST 2 English → x speech translation (`covost2:en-de`, ...; fixie-ai/covost2, which embeds the
    Common Voice audio; facebook/covost2's card gives the same columns: client_id, file, audio,
    sentence, translation, id; configs en_de, en_zh-CN, ...), corpus BLEU/chrF (sacrebleu; 13a
    tokenisation: for zh/ja read chrF)."""

    repo = BENCHMARKS["covost2"].repo
    metrics = Translation.metrics
    kind = "translate"

    def configure(self, spec):
        src, _, tgt = spec.partition("-")
        if src != "en" or tgt not in COVOST_TARGETS:
            raise _spec_error("covost2", spec, [f"en-{t}" for t in COVOST_TARGETS])
        self.target, self.config = tgt, f"en_{COVOST_TARGETS[tgt]}"
        self.name, self.description = f"covost2:{spec}", f"CoVoST 2 English → {LANGUAGE_NAMES[tgt]}: BLEU/chrF"

    def signatures(self) -> dict:
        return M.signatures()

    def read(self):
        split = HF_SPLIT.get(self.split, self.split)
        instruction = TRANSLATE_INSTRUCTION.format(language=LANGUAGE_NAMES[self.target])
        return [Item(f"covost2-{self.config}-{r['id']}", Turn("user", audio=audio, transcript=r["sentence"]),
                     instruction=instruction, references=(r["translation"],),
                     meta={"source": self.repo, "config": self.config, "split": split, "index": i})
                for i, (r, audio) in enumerate(self.open(self.config, split, ["id", "sentence", "translation"]))]


def availability(data_dir_: str | None = None) -> list[tuple[str, Benchmark, str | None]]:
    """(name, benchmark, where it is available without the hub or None) for every benchmark."""
    return [(n, b, locate(b.repo, *b.probe, data_dir_)) for n, b in BENCHMARKS.items()]


# ------------------------------------------------------------------ HeySQuAD transcripts (../shared/data)
class HeySQuADText(Task):
    """HeySQuAD's transcribed questions from the public data (`heysquad-human-transcribed`,
    `heysquad-machine-transcribed`: a person's / an ASR's transcript of a real recording of each
    SQuAD question), typed, over the typed passage: every system reads that transcript, so a row
    says how a system's LLM copes with real transcription errors (the machine form is a cascade
    with a real ASR). References and ids as `squad:PATH` (tasks/text_sets.py)."""

    version = "1"
    metrics = answer_metrics()
    kind = "qa"

    def __init__(self, split: str = "test", *, form: str):
        if form not in ("human-transcribed", "machine-transcribed"):
            raise ValueError(f"no HeySQuAD form {form!r}: use human-transcribed or machine-transcribed")
        self.split, self.form = split, form
        self.name = f"heysquad-{form}"
        self.description = f"real speech, transcribed: HeySQuAD {form.replace('-', ' ')} questions, typed"

    def items(self, limit: int | None = None) -> list[Item]:
        path = public_data_dir() / "text" / "heysquad" / f"dev-common-{self.form}-1002.json"
        return [replace(it, turn=Turn("user", text=it.meta["asr_question"])) for it in read_squad(path, limit=limit)]
