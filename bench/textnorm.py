"""The project's one text normaliser and one word error rate: what the ASR tasks report, what the
cascade-WER buckets use, and what every recipe's dev WER tunes on (so a decoder is tuned on the number
the table reports).

The normaliser is chosen by name (`NORMALIZERS`) and is scoring only: it is not part of any task's
version, so changing it never invalidates cached outputs; its name and version go into every WER/CER
row and into config.json instead (`describe`).

- `whisper` (the default): Whisper's `EnglishTextNormalizer`, as the Open ASR Leaderboard scores with
  it: transformers' copy of OpenAI's code (`transformers.models.whisper.english_normalizer`) with
  Whisper's British→American spelling map (`english.json`, read from the pinned `whisper-normalizer`
  package, byte-identical to openai-whisper's). Numbers become digits (`nineteen ninety` → `1990`,
  `ten percent` → `10%`, `$3.50`), contractions and titles are expanded (`it's` → `it is`,
  `Mr.` → `mister`), fillers and bracketed asides dropped, accents removed.
- `harness-1`: the rules this project wrote before (digits become words, punctuation dropped), kept
  only to reproduce the WER figures of the committed model cards and training logs, which were
  measured with it (on the built-in `asr` test, mostly spoken-form text, the two differ little: the
  cascade 8.58 % with it, 8.67 % with Whisper's). Written-style text scores far worse with it (the
  20 written-vs-spoken pairs of tests/test_textnorm.py: 30.8 % WER against Whisper's 0 %), so it is
  never the default.

Pick one with `$AUDIOCHAT_BENCH_WER_NORMALIZER` (read at scoring time) or the `normalizer=` argument.

WER and CER are counted by jiwer on normalised text: (substitutions + deletions + insertions,
reference length) per pair, summed over a corpus. An empty hypothesis is all deletions; a pair whose
normalised reference is empty is not scored (0 errors, 0 words), as the leaderboard drops such
references instead of charging every hypothesis word.

`bench` is imported by both `systems` and `tasks`, so this module imports neither.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

ENV_NORMALIZER = "AUDIOCHAT_BENCH_WER_NORMALIZER"
DEFAULT_NORMALIZER = "whisper"
NORMALIZER_VERSION = "1"  # of `harness-1`; it is still part of the ASR tasks' frozen versions ("1-norm1")

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
        "twelve": "twelfth"}
FILLERS = {"uh", "um", "umm", "uhm", "er", "erm", "ah", "hmm", "mm", "mhm"}
BRITISH = {"colour": "color", "colours": "colors", "favourite": "favorite", "favourites": "favorites",
           "centre": "center", "centres": "centers", "theatre": "theater", "metre": "meter", "metres": "meters",
           "litre": "liter", "litres": "liters", "honour": "honor", "neighbour": "neighbor", "neighbours": "neighbors",
           "organise": "organize", "organised": "organized", "realise": "realize", "realised": "realized",
           "recognise": "recognize", "travelling": "traveling", "travelled": "traveled", "grey": "gray",
           "behaviour": "behavior", "labour": "labor", "flavour": "flavor", "flavours": "flavors",
           "programme": "program", "defence": "defense", "licence": "license", "catalogue": "catalog",
           "jewellery": "jewelry", "aeroplane": "airplane", "cheque": "check", "tyre": "tire", "harbour": "harbor"}


def number_words(n: int) -> str:
    """0 ≤ n < 10^12 in words, without 'and' (`105` → `one hundred five`)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + " " + name + ("" if n % size == 0 else " " + number_words(n % size))
    raise ValueError(n)


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = _ORD.get(last, (last[:-1] + "ieth") if last.endswith("y") else last + "th")
    return f"{head} {last}".strip()


def _digits(m: re.Match) -> str:
    num, suffix = m.group(1).replace(",", ""), m.group(2)
    if len(num) > 12:
        return " ".join(_ONES[int(d)] for d in num)
    words = number_words(int(num))
    return _ordinal(words) if suffix else words


def _harness_v1(text: str) -> str:
    """The `harness-1` normal form: lowercase; bracketed asides and fillers dropped; digits become
    words (`42` → `forty two`, `3rd` → `third`); British spellings become American; hyphens split
    words; all other punctuation except the apostrophe inside a word removed; whitespace squeezed."""
    t = text.lower()
    t = re.sub(r"[\[(<{][^\])>}]*[\])>}]", " ", t)
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"(\d+(?:,\d{3})*)(st|nd|rd|th)?\b", lambda m: " " + _digits(m) + " ", t)
    t = t.replace("-", " ").replace("’", "'")
    t = re.sub(r"[^\w' ]", " ", t)
    t = re.sub(r"(^| )'+|'+( |$)", " ", t)
    words = [BRITISH.get(w, w) for w in t.split() if w not in FILLERS]
    return " ".join(words)


@lru_cache(maxsize=None)  # (asked for every scored item: the memo key names the normaliser)
def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def _whisper() -> Callable[[str], str]:
    import json
    from importlib import resources

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # Whisper's spelling map (openai-whisper's normalizers/english.json): transformers reads it from a
    # hub checkpoint's normalizer.json, which is not reachable offline; whisper-normalizer ships it
    mapping = json.loads(resources.files("whisper_normalizer").joinpath("normalizers/english.json").read_text("utf-8"))
    return EnglishTextNormalizer(mapping)


@dataclass(frozen=True)
class Normalizer:
    """A named text normaliser: `fn(text) -> normal form`; `version()` names what it runs (for rows)."""

    name: str
    fn: Callable[[], Callable[[str], str]]  # built lazily (the whisper one imports transformers)
    version: Callable[[], str]

    def __call__(self, text: str) -> str:
        return self.fn()(text)


NORMALIZERS = {
    "whisper": Normalizer("whisper", _whisper, lambda: f"transformers=={_package_version('transformers')}, "
                          f"english.json from whisper-normalizer=={_package_version('whisper-normalizer')}"),
    "harness-1": Normalizer("harness-1", lambda: _harness_v1, lambda: NORMALIZER_VERSION),
}


def normalizer(name: str | None = None) -> Normalizer:
    """The normaliser `name`, else `$AUDIOCHAT_BENCH_WER_NORMALIZER`, else the default (`whisper`)."""
    name = name or os.environ.get(ENV_NORMALIZER) or DEFAULT_NORMALIZER
    if name not in NORMALIZERS:
        raise ValueError(f"no WER normaliser {name!r}: use one of {', '.join(NORMALIZERS)}")
    return NORMALIZERS[name]


def describe(name: str | None = None) -> str:
    """`name version` of the normaliser in use: what every WER/CER row and config.json record."""
    n = normalizer(name)
    return f"{n.name} ({n.version()})"


@lru_cache(maxsize=65536)
def _normalize(name: str, text: str) -> str:
    return NORMALIZERS[name](text).strip()


def normalize_english(text: str, name: str | None = None) -> str:
    """`text` in the normal form that WER and CER compare (see the module docstring)."""
    return _normalize(normalizer(name).name, text)


def edit_statistics(hypothesis: str, reference: str, unit: str = "word") -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) of text already normalised, in
    words (`unit="word"`) or characters (`"char"`), via jiwer; summed over a corpus they give corpus
    WER / CER."""
    import jiwer

    if not reference:  # jiwer refuses an empty reference: every hypothesis token is an insertion
        return (len(hypothesis.split()) if unit == "word" else len(hypothesis)), 0
    out = jiwer.process_words(reference, hypothesis) if unit == "word" else jiwer.process_characters(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def error_counts(hypothesis: str, reference: str, unit: str = "word",
                 normalizer: str | None = None) -> tuple[int, int]:
    """`edit_statistics` of the normalised pair: the sufficient statistics of corpus WER / CER; (0, 0)
    when the normalised reference is empty (the pair is not scored)."""
    ref = normalize_english(reference, normalizer)
    if not ref:
        return 0, 0
    return edit_statistics(normalize_english(hypothesis, normalizer), ref, unit)


def wer(refs: Sequence[str], hyps: Sequence[str], normalizer: str | None = None) -> float:
    """Corpus WER of raw hypotheses against raw references (normalised here): all errors over all
    reference words; NaN when the references hold no word at all."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = words = 0
    for r, h in zip(refs, hyps):
        e, n = error_counts(h, r, normalizer=normalizer)
        errors, words = errors + e, words + n
    return errors / words if words else math.nan


def item_wer(hyp: str, ref: str, normalizer: str | None = None) -> float:
    """The WER of one pair, defined as corpus WER on that pair alone; an empty (normalised) reference
    gives 0.0 for an empty hypothesis, else 1.0 (a bucket needs a number where corpus WER skips it)."""
    e, n = edit_statistics(normalize_english(hyp, normalizer), normalize_english(ref, normalizer))
    if not n:
        return 0.0 if not e else 1.0
    return e / n
