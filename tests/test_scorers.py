"""Golden values for scorers and a bootstrap case with a known answer."""
import numpy as np
import pytest

from bench.scoring import score_metric
from bench.stats import resample_counts
from bench.types import Generation, Item, Metric, Turn
from tasks import metrics as M


@pytest.mark.parametrize("s,norm", [
    ("The Capital is PARIS!", "capital is paris"),
    ("  an   apple, a day ", "apple day"),
    ("Washington, D.C.", "washington dc"),
])
def test_normalize_answer(s, norm):
    assert M.normalize_answer(s) == norm


def test_exact_match_and_f1_golden():
    assert M.exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert M.exact_match("Eiffel", "eiffel tower") == 0.0
    # prediction "paris france" vs gold "paris": precision 1/2, recall 1 → F1 2/3
    assert M.token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert M.token_f1("the cat sat", "a dog sat down") == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert M.token_f1("", "") == 0.0 and M.token_f1("x", "") == 0.0  # both empty: 0, as SQuAD v1.1
    assert M.best_over(M.exact_match, "seven", ["7", "seven"]) == 1.0


def test_contains_answer_whole_words_only():
    assert M.contains_answer("The capital of France is Paris.", "Paris") == 1.0
    assert M.contains_answer("A spider has 8 legs.", "8") == 1.0
    assert M.contains_answer("It is 18.", "8") == 0.0
    assert M.contains_answer("Blue whales are large", "blue whale") == 0.0


@pytest.mark.parametrize("prediction, gold, hit", [
    ("It is Paris’.", "Paris", 1.0), ("“Paris”", "Paris", 1.0), ("Paris", "‘Paris’", 1.0),
    ("It’s Paris", "it's Paris", 1.0),  # typographic quotes and apostrophes fold to ASCII
    ("A week has seven days.", "7", 1.0), ("It has 7 days", "seven", 1.0),
    ("He was born in 1990", "nineteen ninety", 1.0),
    ("one hundred and five", "105", 1.0), ("seventy-seven", "77", 1.0), ("the second one", "2nd", 1.0),
    ("It has 17 legs", "seven", 0.0), ("seven hundred", "7", 0.0),  # numbers are whole numbers, whole words
    ("I have one of them", "one", 1.0), ("It is 18.", "eight", 0.0),
])
def test_contains_answer_folds_quotes_and_numbers(prediction, gold, hit):
    assert M.contains_answer(prediction, gold) == hit
    assert M.exact_match("Paris’", "Paris") == 1.0 and M.token_f1("“Paris”", "Paris") == 1.0


def test_chrf_statistics_sum_to_sacrebleu_corpus_score():
    hyps = ["The capital is Paris.", "A week has 7 days", "blue sky"]
    refs = ["Paris is the capital.", "Seven days", "The sky is blue"]
    total = np.sum([M.chrf_statistics(h, r) for h, r in zip(hyps, refs)], axis=0)
    assert M.chrf_from_statistics(total) == pytest.approx(M.corpus_chrf(hyps, refs))
    assert M.corpus_chrf(["identical text"], ["identical text"]) == pytest.approx(100.0)


def _items(n):
    return [Item(id=f"i{k}", turn=Turn("user", text=f"q{k}"), references=("a",)) for k in range(n)]


def test_bootstrap_known_answer_bernoulli():
    """Mean of 200 items, 100 correct: value 0.5; the 95% CI of a proportion is ±1.96·√(.25/200) ≈ ±0.069."""
    items = _items(200)
    outs = {it.id: Generation(text="a" if k % 2 == 0 else "b") for k, it in enumerate(items)}
    m = Metric("em", "item", True, lambda it, g, ctx: float(g.text == "a"))
    r = score_metric(m, items, outs, {})
    assert r["value"] == 0.5 and r["n"] == 200 and r["n_failed"] == 0
    assert r["ci_low"] == pytest.approx(0.5 - 0.069, abs=0.015) and r["ci_high"] == pytest.approx(0.5 + 0.069, abs=0.015)


def test_bootstrap_constant_has_zero_width():
    items = _items(30)
    r = score_metric(Metric("one", "item", True, lambda *a: 1.0), items, {i.id: Generation("x") for i in items}, {})
    assert (r["value"], r["ci_low"], r["ci_high"]) == (1.0, 1.0, 1.0)


def test_corpus_metric_is_ratio_of_sums_not_mean_of_ratios():
    items = _items(2)
    errs = {"i0": (1, 1), "i1": (0, 9)}  # (errors, words): corpus 1/10, mean of ratios 0.5
    m = Metric("wer", "corpus", False, lambda it, g, ctx: errs[it.id], lambda t: t[0] / t[1])
    r = score_metric(m, items, {i.id: Generation("x") for i in items}, {})
    assert r["value"] == pytest.approx(0.1)


def test_failed_items_are_excluded_and_counted():
    items = _items(4)
    outs = {"i0": Generation("a"), "i1": None, "i2": Generation("a"), "i3": None}
    r = score_metric(Metric("em", "item", True, lambda it, g, c: 1.0), items, outs, {})
    assert r["n"] == 2 and r["n_failed"] == 2


def test_metric_needing_a_missing_system_is_skipped():
    m = Metric("agree", "item", True, lambda it, g, c: 1.0, needs="text")
    assert score_metric(m, _items(1), {"i0": Generation("a")}, {}) is None


def test_resample_counts_rows_sum_to_n():
    w = resample_counts(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()
    assert (w == resample_counts(7, 50, seed=3)).all()


def test_paired_difference_known_answers():
    from bench.scoring import paired_difference

    items = _items(50)
    m = Metric("score", "item", True, lambda it, g, c: float(g.text))
    base = {it.id: Generation(str(k % 5 / 10)) for k, it in enumerate(items)}
    better = {it.id: Generation(str(k % 5 / 10 + 0.2)) for k, it in enumerate(items)}
    d = paired_difference(m, items, better, base, {})
    # every item improves by exactly 0.2: pairing removes the between-item spread entirely
    assert d["value"] == pytest.approx(0.2) and d["ci_low"] == pytest.approx(0.2) and d["ci_high"] == pytest.approx(0.2)
    assert d["significant"] and d["n"] == 50
    same = paired_difference(m, items, base, base, {})
    assert same["value"] == 0 and not same["significant"]
    # failures on either side drop the item from the pair
    base["i0"] = None
    assert paired_difference(m, items, better, base, {})["n"] == 49


def test_score_task_adds_difference_rows_against_baselines():
    from bench.scoring import score_task
    from bench.types import Task

    class T(Task):
        name, version = "t", "1"
        metrics = (Metric("acc", "item", True, lambda it, g, c: float(g.text == "a")),)

    items = _items(10)
    by_system = {"text": {i.id: Generation("a") for i in items}, "cascade": {i.id: Generation("b") for i in items},
                 "e2e": {i.id: Generation("a") for i in items}}
    rows = score_task(T(), "clean", items, by_system, ["cascade", "text"])
    diffs = {(r["system"], r["baseline"]): r["value"] for r in rows if r["baseline"]}
    assert diffs == {("e2e", "cascade"): 1.0, ("e2e", "text"): 0.0, ("cascade", "text"): -1.0, ("text", "cascade"): 1.0}


def test_wer_buckets():
    from bench.analysis import bucket_of, item_wer, wer_bucket_rows
    from bench.types import Task

    assert item_wer("What is the capital of France?", "what is the capital of france") == 0.0
    assert bucket_of(0.0) == "0" and bucket_of(0.1) == "(0,10]" and bucket_of(0.25) == "(10,30]" and bucket_of(1.0) == ">30"

    class T(Task):
        name, version = "t", "1"
        metrics = (Metric("acc", "item", True, lambda it, g, c: float(g.text == "a")),)

    ten = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"  # (no number words: Whisper's
    items = [Item(id=f"i{k}", turn=Turn("user", transcript=ten)) for k in range(3)]  # normaliser makes them digits)
    hyps = [ten, ten.rsplit(" ", 1)[0], "alpha"]
    by_system = {"cascade": {it.id: Generation("a", transcript=h) for it, h in zip(items, hyps)},
                 "e2e": {it.id: Generation("a") for it in items}}
    rows = wer_bucket_rows(T(), "clean", items, by_system, ["cascade-whisper", "cascade"])
    got = {(r["condition"], r["bucket_by"], r["bucket"]): r["n"] for r in rows if r["system"] == "e2e"}
    assert got == {("clean", "cascade", "0"): 1, ("clean", "cascade", "(0,10]"): 1, ("clean", "cascade", ">30"): 1}
    assert wer_bucket_rows(T(), "clean", items, by_system, ["cascade-whisper"]) == []  # no bucketing system ran


def test_sacrebleu_signatures():
    sig = M.signatures()
    assert sig["bleu"].startswith("nrefs:1|") and "version:" in sig["chrf"]
