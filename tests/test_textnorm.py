"""The one normaliser and the one WER (bench.textnorm): golden normal forms, corpus WER and CER counts,
the per-item WER of the cascade buckets, and the import boundaries the shared modules rely on."""
import ast
import math
from pathlib import Path

import pytest

from bench.textnorm import NORMALIZER_VERSION, edit_statistics, error_counts, item_wer, normalize_english, wer

ROOT = Path(__file__).resolve().parents[1]


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
def test_normalizer_golden(raw, norm):
    assert normalize_english(raw) == norm


def test_normalizer_version_is_pinned():
    """The version is part of the asr task's version and so of every cached score: moving the
    normaliser must not have changed it."""
    from tasks.builtin import ASR

    assert NORMALIZER_VERSION == "1" and ASR.version == "1-norm1"


def test_corpus_wer_sums_errors_over_all_reference_words():
    refs, hyps = ["one two three four", "five"], ["one two three four", "six"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # not the mean of 0 and 1
    assert wer(["It costs 42 dollars."], ["it costs forty-two dollars"]) == 0.0
    assert wer(["My favourite colour!"], ["uh my favorite color"]) == 0.0
    assert wer(["the cat sat"], [""]) == 1.0  # an empty hypothesis is all deletions
    assert wer(["", "a b"], ["x y", "a b"]) == 1.0  # an empty reference: its words are insertions
    assert math.isnan(wer([""], ["x"]))
    with pytest.raises(ValueError):
        wer(["a"], [])


def test_error_counts_are_the_asr_task_statistics():
    assert error_counts("A b, x d.", "a b c") == (2, 3)  # one substitution, one insertion
    assert error_counts("", "a b c") == (3, 3)
    assert error_counts("x y", "[noise]") == (2, 0)
    assert error_counts("abd", "abc", "char") == (1, 3)
    assert error_counts("Hello, World", "hello world", "char") == (0, 11)
    assert edit_statistics("Hello", "hello") == (1, 1)  # edit_statistics itself does not normalise


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
