"""The one normaliser and the one WER (bench.textnorm): golden normal forms (Whisper's, and the old rules
by name), corpus WER and CER counts, the per-item WER of the cascade buckets, and the import boundaries
the shared modules rely on."""
import ast
import math
from pathlib import Path

import pytest

from bench.textnorm import (ENV_NORMALIZER, NORMALIZER_VERSION, describe, edit_statistics, error_counts, item_wer,
                            normalize_english, normalizer, wer)

ROOT = Path(__file__).resolve().parents[1]


# (written, its normal form, a spoken form of it): every normal form computed by openai-whisper's own
# EnglishTextNormalizer (openai-whisper 20250625, whisper/normalizers), the Open ASR Leaderboard's
# normaliser; each pair is one the old harness normaliser scored as errors (issue 39)
WHISPER_GOLDEN = [
    ("He was born in 1990.", "he was born in 1990", "he was born in nineteen ninety"),
    ("Prices rose 10% last year.", "prices rose 10% last year", "prices rose ten percent last year"),
    ("Growth was 3.5 percent.", "growth was 3.5%", "growth was three point five percent"),
    ("It costs $3.50.", "it costs $3.50", "it costs three dollars and fifty cents"),
    ("It's raining.", "it is raining", "it is raining"),
    ("Mr. Smith arrived.", "mister smith arrived", "mister smith arrived"),
    ("There were 105 guests.", "there were 105 guests", "there were one hundred and five guests"),
    ("Music of the 1990s", "music of the 1990s", "music of the nineteen nineties"),
    ("We met at the café.", "we met at the cafe", "we met at the cafe"),
    ("My favourite colour is grey.", "my favorite color is gray", "my favorite color is gray"),
    ("Dr. Jones won't come.", "doctor jones will not come", "doctor jones will not come"),
    ("The 21st century", "the 21st century", "the twenty first century"),
    ("It costs 1,000 dollars", "it costs $1000", "it costs one thousand dollars"),
    ("I'd go with the 2nd option.", "i would go with the 2nd option", "i would go with the second option"),
    ("Room 42, please.", "room 42 please", "room forty two please"),
    ("She's 7 years old.", "she is 7 years old", "she is seven years old"),
    ("They've won 3 games.", "they have won 3 games", "they have won three games"),
    ("Uh, I think so [laughs].", "i think so", "i think so"),
    ("The naïve façade", "the naive facade", "the naive facade"),
    ("It weighs 2.5 kilograms.", "it weighs 2.5 kilograms", "it weighs two point five kilograms"),
]


@pytest.mark.parametrize("written,norm,spoken", WHISPER_GOLDEN)
def test_whisper_normalizer_golden(written, norm, spoken):
    assert normalize_english(written) == norm == normalize_english(spoken)
    assert wer([written], [spoken]) == 0.0


def test_whisper_quirks_are_kept():
    """Whisper's behaviour, warts included (these are what the leaderboard computes)."""
    assert normalize_english("Don’t say 'hello' (twice)") == "don t say hello"  # typographic apostrophe: a space
    assert normalize_english("one and a half") == "one.5"
    assert normalize_english("um... hmm") == "."


@pytest.mark.parametrize("raw,norm", [
    ("Hello, World! It is 42.", "hello world it is forty two"),
    ("The 3rd of May, 1999 [laughs]", "the third of may one thousand nine hundred ninety nine"),
    ("Uh, my favourite colour is grey-blue.", "my favorite color is gray blue"),
    ("It costs 1,000 dollars", "it costs one thousand dollars"),
    ("the 21st century", "the twenty first century"),
    ("Don’t say 'hello' (twice)", "don't say hello"),
    ("105 and 12th and 2,500,000", "one hundred five and twelfth and two million five hundred thousand"),
    ("um... hmm", ""),
    ("", ""),
])
def test_harness_v1_normalizer_golden(raw, norm):
    """The old rules, kept by name (`harness-1`) for the numbers of the committed cards."""
    assert normalize_english(raw, "harness-1") == norm


def test_normalizer_is_chosen_by_name_and_environment(monkeypatch):
    assert normalizer().name == "whisper" and describe().startswith("whisper (transformers==")
    monkeypatch.setenv(ENV_NORMALIZER, "harness-1")
    assert normalizer().name == "harness-1" and describe() == f"harness-1 ({NORMALIZER_VERSION})"
    assert wer(["Growth was 3.5 percent."], ["growth was three point five percent"]) == 0.2  # "3.5" → "three five"
    with pytest.raises(ValueError, match="no WER normaliser"):
        normalizer("nope")


def test_the_normalizer_is_scoring_only():
    """The ASR tasks' versions (cache keys) stay what they were; the rows name the normaliser instead."""
    from tasks.builtin import ASR, RealASR

    assert ASR.version == RealASR.version == "1-norm1"
    assert {m.name: m.labels()["normalizer"] for m in ASR.metrics if m.labels} == {"wer": describe(), "cer": describe()}


def test_corpus_wer_sums_errors_over_all_reference_words():
    refs, hyps = ["the cat sat down", "dog"], ["the cat sat down", "cow"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # not the mean of 0 and 1
    assert wer(["It costs 42 dollars."], ["it costs forty-two dollars"]) == 0.0
    assert wer(["My favourite colour!"], ["uh my favorite color"]) == 0.0
    assert wer(["the cat sat"], [""]) == 1.0  # an empty hypothesis is all deletions
    assert wer(["", "a b"], ["x y", "a b"]) == 0.0  # an empty reference is not scored (the leaderboard drops it)
    assert math.isnan(wer([""], ["x"]))
    with pytest.raises(ValueError):
        wer(["a"], [])


def test_error_counts_are_the_asr_task_statistics():
    assert error_counts("A b, x d.", "a b c") == (2, 3)  # one substitution, one insertion
    assert error_counts("", "a b c") == (3, 3)
    assert error_counts("x y", "[noise]") == (0, 0)  # nothing to score
    assert error_counts("abd", "abc", "char") == (1, 3)
    assert error_counts("Hello, World", "hello world", "char") == (0, 11)
    assert edit_statistics("Hello", "hello") == (1, 1)  # edit_statistics itself does not normalise
    assert edit_statistics("x y", "") == (2, 0)


@pytest.mark.parametrize("hyp,ref,value", [
    ("What is the capital of France?", "what is the capital of france", 0.0),
    ("a b x d", "a b c", 2 / 3),
    ("", "a b c", 1.0),
    ("", "", 0.0),
    ("uh", "[laughs]", 0.0),  # both empty once normalised
    ("hello", "", 1.0),
    ("the colour", "The color.", 0.0),
])
def test_item_wer_golden(hyp, ref, value):
    assert item_wer(hyp, ref) == pytest.approx(value)
    if normalize_english(ref):
        assert item_wer(hyp, ref) == pytest.approx(wer([ref], [hyp]))  # corpus WER of the pair alone


def _imports(folder: str) -> set[tuple[str, str]]:
    out = set()
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            out |= {(str(path.relative_to(ROOT)), n.split(".")[0]) for n in names}
    return out


def test_shared_modules_keep_their_import_boundaries():
    """systems and tasks share text and data only through bench and corpus, never each other."""
    assert not {f for f, m in _imports("systems") if m == "tasks"}
    assert not {f for f, m in _imports("tasks") if m == "systems"}
    assert not {f for f, m in _imports("corpus") if m in ("systems", "tasks", "bench")}
    assert not {m for f, m in _imports("bench") if f == "bench/textnorm.py"} & {"systems", "tasks", "corpus"}
    readers = [p for p in (ROOT / "systems").rglob("*.py") if '"tasks" / "data"' in p.read_text()
               or "tasks/data" in p.read_text()]
    assert not readers
