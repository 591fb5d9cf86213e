"""The built-in suites, authored for this project (corpus/data/), spoken by the project's TTS.

Every split is separated by text and by voice: an item of split S is spoken by a voice of S
(`bench.tts.voices(S)`), drawn from the item id, so no test voice is ever heard in training.
Tasks evaluate the `test` split unless constructed with another.
"""
from __future__ import annotations

import json
from functools import lru_cache

from bench import textnorm
from bench.types import TOPLINE, Item, Metric, Task, Turn, first_n
from corpus import DATA
from tasks import metrics as M
from tasks.common import agree, answer_metrics, public_data_dir
from tasks.loaders import ASR_INSTRUCTION, QA_INSTRUCTION, SUMMARY_INSTRUCTION, tts_ref


@lru_cache(maxsize=None)
def rows(name: str, split: str) -> tuple[dict, ...]:
    """The rows of one split of an authored suite file (corpus/data/suites/<name>.jsonl)."""
    path = DATA / "suites" / f"{name}.jsonl"
    return tuple(r for r in (json.loads(l) for l in path.read_text().splitlines() if l.strip())
                 if r.get("split") == split)


def spoken(text: str, split: str, seed: str) -> Turn:
    from bench.tts import Voice

    return Turn("user", audio=tts_ref(text, Voice.sample(split, seed)), transcript=text)


class SuiteTask(Task):
    """A task over one split of an authored suite."""

    def __init__(self, split: str = "test"):
        self.split = split

    def items(self, limit: int | None = None) -> list[Item]:
        return first_n((self.item(r) for r in self.source()), limit)

    def source(self) -> tuple[dict, ...]:
        return rows(self.file, self.split)

    def item(self, row: dict) -> Item:
        raise NotImplementedError


# A short answer's length, the same for every system: a few words on one line. The topline's answers to
# the first 100 typed questions: median 11 tokens, 92 within 32; the 8 longer are loops ("The answer is: The
# answer is: ...") or lectures, which the cap cuts instead of decoding them to the run's 64.
QA_MAX_NEW_TOKENS, QA_STOP = 32, ("\n",)


class SpokenQA(SuiteTask):
    name = "spoken-qa"
    version = "2"
    description = "spoken factual questions with short gold answers (150 test items)"
    file = "spoken_qa"
    instruction = QA_INSTRUCTION
    metrics = answer_metrics()
    max_new_tokens, stop = QA_MAX_NEW_TOKENS, QA_STOP

    def source(self):
        if self.split == "test":  # the original test set lives in its own file
            return tuple(json.loads(l) for l in (DATA / "spoken_qa.jsonl").read_text().splitlines() if l.strip())
        return super().source()

    def item(self, r):
        return Item(id=r["id"], turn=spoken(r["question"], self.split, r["id"]), instruction=self.instruction,
                    references=tuple(r["answers"]))


class TypedQA(SpokenQA):
    """Text ability preserved: the spoken-QA questions typed, through every system. A speech
    system that keeps the LLM's text ability answers exactly like the topline here."""

    name = "typed-qa"
    version = "1"
    description = "the spoken-QA questions typed instead of spoken (text ability preserved)"

    def item(self, r):
        return Item(id=r["id"], turn=Turn("user", text=r["question"]), instruction=self.instruction,
                    references=tuple(r["answers"]))


def _ppl(total) -> float:
    import math

    return math.exp(total[0] / total[1]) if total[1] else float("nan")


def _ppl_ratio(total) -> float:
    """perplexity(system) / perplexity(reference), both over the same items."""
    return _ppl(total[:2]) / _ppl(total[2:]) if total[1] and total[3] else float("nan")


class ResponsePPL(SpokenQA):
    """The paper's metric: perplexity of the topline's (clean) answer to each spoken question, given
    each system's own view of the question (the topline: the gold transcript; the cascade: its ASR
    transcript; AudioChatLlama: the audio). Reported with the ratio to the topline's own perplexity."""

    name = "response-ppl"
    version = "1"
    description = "perplexity of the topline's answer given each system's input (spoken-QA items)"
    mode = "score"
    reference_system = TOPLINE
    primary = "ppl_ratio"
    metrics = (
        Metric("ppl", "corpus", False, lambda it, g, c: (g.nll, g.tokens), _ppl),
        Metric("ppl_ratio", "corpus", False,
               lambda it, g, c: None if c.get(TOPLINE) is None else (g.nll, g.tokens, c[TOPLINE].nll, c[TOPLINE].tokens),
               _ppl_ratio, needs=TOPLINE),
    )


def _wer_metrics() -> tuple[Metric, ...]:
    def stats(unit):
        def fn(item, gen, ctx):
            hyp = gen.transcript if gen.transcript is not None else gen.text
            return textnorm.error_counts(hyp, item.references[0], unit)
        return fn

    def labels():  # the normaliser is chosen at scoring time: each row names the one that scored it
        return {"normalizer": textnorm.describe()}

    def rtf(item, gen, ctx):  # (seconds of audio, seconds of ASR compute), for systems that time their ASR
        return None if "asr" not in gen.seconds else (gen.seconds.get("audio", 0.0), gen.seconds["asr"])

    return (Metric("wer", "corpus", False, stats("word"), M.ratio, labels=labels),
            Metric("cer", "corpus", False, stats("char"), M.ratio, labels=labels),
            Metric("rtfx", "corpus", True, rtf, M.ratio, timing=True))


class ASR(SuiteTask):
    name = "asr"
    version = "1-norm1"  # frozen (the cache key): the WER normaliser is scoring only, named in each row
    description = "read sentences; corpus WER/CER on the system's transcript (120 test items)"
    file = "asr"
    metrics = _wer_metrics()
    transcript_only = True

    def item(self, r):
        return Item(id=r["id"], turn=spoken(r["text"], self.split, r["id"]), instruction=ASR_INSTRUCTION,
                    references=(r["text"],))


LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish"}


class Translation(SuiteTask):
    """Speech translation English → `target` (a key of LANGUAGES): corpus BLEU and chrF (sacrebleu).
    Registered once per target language (translate-en-fr, -de, -es)."""

    version = "1"
    file = "translation"
    primary = "chrf"
    metrics = (
        Metric("bleu", "corpus", True, lambda it, g, c: M.bleu_statistics(g.text, it.references), M.bleu_from_statistics),
        Metric("chrf", "corpus", True, lambda it, g, c: M.chrf_statistics(g.text, it.references[0]), M.chrf_from_statistics),
        Metric("agree_chrf", "corpus", True, agree(M.chrf_statistics), M.chrf_from_statistics, needs=TOPLINE),
    )

    def __init__(self, split: str = "test", *, target: str):
        if target not in LANGUAGES:
            raise ValueError(f"no translation target {target!r}: use one of {', '.join(LANGUAGES)}")
        super().__init__(split)
        self.target = target

    def signatures(self) -> dict:
        """sacrebleu signatures of the BLEU and chrF configurations (recorded in config.json)."""
        return M.signatures()

    @property
    def name(self):
        return f"translate-en-{self.target}"

    @property
    def description(self):
        return f"speech translation English → {LANGUAGES[self.target]}, BLEU/chrF (80 test items)"

    def item(self, r):
        return Item(id=f"{r['id']}-{self.target}", turn=spoken(r["en"], self.split, r["id"]),
                    instruction=f"Translate what the user says into {LANGUAGES[self.target]}. "
                                "Reply with the translation only.",
                    references=(r[self.target],))


class Summarization(SuiteTask):
    name = "summarize"
    version = "1"
    description = "a spoken passage → a one-sentence summary; ROUGE-1/2/L against 3 references (30 test items)"
    file = "summarization"
    judged = True  # open-ended: a judge (`run --judge SYSTEM`) scores its answers too
    primary = "rouge_l"
    metrics = tuple(Metric(k.replace("rouge", "rouge_").lower(), "item", True,
                           (lambda kind: lambda it, g, c: M.rouge(g.text, it.references, kind))(k))
                    for k in ("rouge1", "rouge2", "rougeL"))

    def item(self, r):
        return Item(id=r["id"], turn=spoken(r["passage"], self.split, r["id"]), instruction=SUMMARY_INSTRUCTION,
                    references=tuple(r["summaries"]))


class MultiTurn(SuiteTask):
    name = "multiturn"
    version = "1"
    description = "conversations whose last spoken turn needs earlier typed/spoken turns (40 test items)"
    file = "multiturn"
    instruction = "Answer the user's last question in as few words as possible."
    metrics = answer_metrics()
    max_new_tokens, stop = QA_MAX_NEW_TOKENS, QA_STOP

    def item(self, r):
        history = []
        for k, t in enumerate(r["turns"]):
            if t["role"] == "assistant" or t.get("mode") == "typed":
                history.append(Turn(t["role"], text=t["text"]))
            else:  # one speaker per conversation: the voice is drawn from the conversation id
                history.append(spoken(t["text"], self.split, r["id"]))
        final = r["final"]
        turn = spoken(final["text"], self.split, r["id"]) if final.get("mode", "spoken") == "spoken" \
            else Turn("user", text=final["text"])
        return Item(id=r["id"], turn=turn, history=tuple(history), instruction=self.instruction,
                    references=tuple(r["answers"]), meta={"kind": r.get("kind")})


# dataset → (task name, description, reader of its folder under <public data>/speech/)
REAL_SPEECH = {
    "fleurs": ("asr-fleurs-en", "real speech: FLEURS English test clips (many speakers)",
               lambda loaders, d: loaders.read_fleurs(d / "fleurs", "en")),
    "ljspeech": ("asr-ljspeech", "real speech: LJSpeech, one female reader",
                 lambda loaders, d: loaders.read_ljspeech(d / "ljspeech")),
    "librivox": ("asr-librivox", "real speech: LibriVox, one reader",
                 lambda loaders, d: loaders.read_librivox(d / "librivox")),
}


class RealASR(Task):
    """ASR on real recorded speech from the public evaluation data (never used for training):
    `dataset` is a key of REAL_SPEECH. Registered once per dataset (asr-fleurs-en, ...)."""

    version = "1-norm1"  # frozen (the cache key): the WER normaliser is scoring only, named in each row
    metrics = _wer_metrics()
    transcript_only = True

    def __init__(self, split: str = "test", *, dataset: str):
        if dataset not in REAL_SPEECH:
            raise ValueError(f"no real-speech dataset {dataset!r}: use one of {', '.join(REAL_SPEECH)}")
        self.split, self.dataset = split, dataset
        self.name, self.description, self._read = REAL_SPEECH[dataset]

    def items(self, limit: int | None = None) -> list[Item]:
        from tasks import loaders

        return first_n(self._read(loaders, public_data_dir() / "speech"), limit)


class FleursTranslation(Translation):
    """Speech translation of real FLEURS English clips → `target`, with FLORES-200 references
    (public data). Registered once per target language (fleurs-translate-en-fr, -de, -es)."""

    def items(self, limit: int | None = None) -> list[Item]:
        from tasks import loaders

        return first_n(loaders.read_fleurs(public_data_dir() / "speech" / "fleurs", "en", self.target), limit)

    @property
    def name(self):
        return f"fleurs-translate-en-{self.target}"

    @property
    def description(self):
        return f"real speech: FLEURS English clips → {LANGUAGES[self.target]} (FLORES-200 references)"
