"""The project's one text normaliser and one word error rate: what the `asr` task reports, what the
cascade-WER buckets use, and what every recipe's dev WER tunes on (so a decoder is tuned on the number
the table reports).

The normaliser (version `NORMALIZER_VERSION`, part of the ASR task's version, so changing it changes
cache keys) is Whisper-style English, in this order: lowercase; drop bracketed asides and fillers (uh,
um, er, ah, hmm, mm); numbers written in digits become words (`42` → `forty two`, `3rd` → `third`);
British spellings become American (`colour` → `color`); hyphens split words; all other punctuation
except the apostrophe inside a word is removed; whitespace is squeezed.

WER and CER are counted by jiwer on normalised text: (substitutions + deletions + insertions,
reference length) per pair, summed over a corpus. An empty hypothesis is all deletions; an empty
reference contributes its hypothesis' words as insertions and nothing to the length.

`bench` is imported by both `systems` and `tasks`, so this module imports neither.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

NORMALIZER_VERSION = "1"

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


def normalize_english(text: str) -> str:
    """`text` in the pinned normal form that WER and CER compare (see the module docstring)."""
    t = text.lower()
    t = re.sub(r"[\[(<{][^\])>}]*[\])>}]", " ", t)
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"(\d+(?:,\d{3})*)(st|nd|rd|th)?\b", lambda m: " " + _digits(m) + " ", t)
    t = t.replace("-", " ").replace("’", "'")
    t = re.sub(r"[^\w' ]", " ", t)
    t = re.sub(r"(^| )'+|'+( |$)", " ", t)
    words = [BRITISH.get(w, w) for w in t.split() if w not in FILLERS]
    return " ".join(words)


def edit_statistics(hypothesis: str, reference: str, unit: str = "word") -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) of text already normalised, in
    words (`unit="word"`) or characters (`"char"`), via jiwer; summed over a corpus they give corpus
    WER / CER."""
    import jiwer

    if not reference:  # jiwer refuses an empty reference: every hypothesis token is an insertion
        return (len(hypothesis.split()) if unit == "word" else len(hypothesis)), 0
    out = jiwer.process_words(reference, hypothesis) if unit == "word" else jiwer.process_characters(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def error_counts(hypothesis: str, reference: str, unit: str = "word") -> tuple[int, int]:
    """`edit_statistics` of the normalised pair: the sufficient statistics of corpus WER / CER."""
    return edit_statistics(normalize_english(hypothesis), normalize_english(reference), unit)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER of raw hypotheses against raw references (normalised here): all errors over all
    reference words; NaN when the references hold no word at all."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = words = 0
    for r, h in zip(refs, hyps):
        e, n = error_counts(h, r)
        errors, words = errors + e, words + n
    return errors / words if words else math.nan


def item_wer(hyp: str, ref: str) -> float:
    """The WER of one pair, defined as corpus WER on that pair alone; an empty (normalised) reference
    gives 0.0 for an empty hypothesis, else 1.0."""
    e, n = error_counts(hyp, ref)
    if not n:
        return 0.0 if not e else 1.0
    return e / n
