"""Every scorer pinned to the reference the field uses, on fixed inputs, so that drift in this code or in
a pinned package fails here (issue 39's table):

| scorer | reference | here |
|---|---|---|
| BLEU, chrF (summed statistics, batched bootstrap) | sacrebleu `corpus_bleu` / `corpus_chrf` | equal |
| ROUGE-1/2/L, Porter stemmer, best reference | `rouge_score` `score_multi` | equal |
| WER normaliser | Whisper's `EnglishTextNormalizer` (transformers + english.json) | equal (and openai-whisper's own
  code gave the literal pairs of tests/test_textnorm.py) |
| WER / CER | jiwer on the normalised corpus | equal |
| SQuAD EM / F1 | the SQuAD v1.1 evaluation script | equal on ASCII text; typographic quotes folded here |

IFEval and multiple choice have no package to call: tests/test_voicebench_scoring.py holds their cases,
each checked against Google's instruction_following_eval and read by hand.
"""
import collections
import re
import string
from pathlib import Path

import numpy as np
import pytest

from bench.textnorm import normalize_english, wer
from tasks import metrics as M

HYPS = ["The capital of France is Paris.", "A week has 7 days", "blue sky", "", "It costs $3.50, doesn't it?",
        "Wir haben jetzt vier Monate alte Mäuse.", "the the the the", "Mr. Smith went to Washington in 1990."]
REFS = ["Paris is the capital of France.", "Seven days make a week.", "The sky is blue", "nothing here",
        "It costs three dollars fifty, does it not?", "Wir haben jetzt 4 Monate alte Mäuse.", "the cat",
        "Mister Smith went to Washington in nineteen ninety."]


def _pairs(shared_data=None) -> tuple[list[str], list[str]]:
    """The crafted pairs, plus FLORES lines with perturbed hypotheses when the public data is present."""
    hyps, refs = list(HYPS), list(REFS)
    if shared_data is not None:
        lines = (Path(shared_data) / "text/flores200/eng_Latn.devtest").read_text().splitlines()[:40]
        for k, line in enumerate(lines):
            words = line.split()
            hyps.append(" ".join(words[: len(words) - k % 4]) if k % 3 else line.lower())  # cut or lower-cased
            refs.append(line)
    return hyps, refs


@pytest.fixture(params=["crafted", "flores"])
def pairs(request):
    if request.param == "crafted":
        return _pairs()
    return _pairs(request.getfixturevalue("shared_data"))


def test_bleu_and_chrf_from_summed_statistics_equal_sacrebleu(pairs):
    import sacrebleu

    hyps, refs = pairs
    bleu = np.sum([M.bleu_statistics(h, [r]) for h, r in zip(hyps, refs)], axis=0)
    chrf = np.sum([M.chrf_statistics(h, r) for h, r in zip(hyps, refs)], axis=0)
    assert M.bleu_from_statistics(bleu) == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert M.chrf_from_statistics(chrf) == sacrebleu.corpus_chrf(hyps, [refs]).score


def test_batched_bootstrap_equals_sacrebleu_on_each_resample(pairs):
    """The bootstrap resamples statistics: each resample's score is sacrebleu's on the resampled corpus."""
    import sacrebleu

    from bench.stats import resample_counts

    hyps, refs = pairs
    bleu = np.array([M.bleu_statistics(h, [r]) for h, r in zip(hyps, refs)])
    chrf = np.array([M.chrf_statistics(h, r) for h, r in zip(hyps, refs)])
    counts = resample_counts(len(hyps), 5, seed=3)
    bleus, chrfs = M.bleu_from_statistics.batched(counts @ bleu), M.chrf_from_statistics.batched(counts @ chrf)
    for w, b, c in zip(counts, bleus, chrfs):
        h = [x for x, k in zip(hyps, w) for _ in range(int(k))]
        r = [x for x, k in zip(refs, w) for _ in range(int(k))]
        assert b == pytest.approx(sacrebleu.corpus_bleu(h, [r]).score, abs=1e-9)
        assert c == pytest.approx(sacrebleu.corpus_chrf(h, [r]).score, abs=1e-9)


def test_rouge_equals_rouge_score_multi(pairs):
    from rouge_score import rouge_scorer

    hyps, refs = pairs
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for h, r in zip(hyps, refs):
        references = [r, r.lower().replace("the", "a")]
        best = scorer.score_multi(references, h)
        for kind in ("rouge1", "rouge2", "rougeL"):
            assert M.rouge(h, references, kind) == best[kind].fmeasure


def test_normalizer_is_whispers_english_text_normalizer(pairs):
    import json
    from importlib import resources

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    mapping = json.loads(resources.files("whisper_normalizer").joinpath("normalizers/english.json").read_text("utf-8"))
    whisper = EnglishTextNormalizer(mapping)
    assert mapping["colour"] == "color" and len(mapping) > 1700  # Whisper's whole spelling map, not a stub
    for text in (*pairs[0], *pairs[1]):
        assert normalize_english(text) == whisper(text).strip()


def test_wer_is_jiwer_on_the_normalised_corpus(pairs):
    import jiwer

    hyps, refs = pairs
    kept = [(normalize_english(r), normalize_english(h)) for r, h in zip(refs, hyps) if normalize_english(r)]
    assert wer(refs, hyps) == pytest.approx(jiwer.wer([r for r, _ in kept], [h for _, h in kept]), abs=1e-12)


# The SQuAD v1.1 evaluation script's definitions (evaluate-v1.1.py), verbatim in substance
def _v11_normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _v11_f1(prediction, ground_truth):
    prediction_tokens, ground_truth_tokens = _v11_normalize(prediction).split(), _v11_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision, recall = num_same / len(prediction_tokens), num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _v11_em(prediction, ground_truth):
    return _v11_normalize(prediction) == _v11_normalize(ground_truth)


@pytest.mark.parametrize("prediction, gold", [
    ("The Eiffel Tower.", "eiffel tower"), ("Paris, France", "Paris"), ("the cat sat", "a dog sat down"),
    ("", ""), ("x", ""), ("", "x"), ("an apple a day", "apple"), ("Washington, D.C.", "washington dc"),
    ("1,000", "1000"), ("seven", "7"), ("It's Paris", "its paris"), ("cat cat cat", "cat"),
])
def test_squad_em_and_f1_equal_v11(prediction, gold):
    assert M.exact_match(prediction, gold) == float(_v11_em(prediction, gold))
    assert M.token_f1(prediction, gold) == pytest.approx(_v11_f1(prediction, gold), abs=1e-15)


def test_squad_differs_from_v11_only_by_folding_typographic_quotes():
    """v1.1 keeps `’` and `”` (not in string.punctuation), so `Paris’` ≠ `Paris` there; here they fold."""
    assert not _v11_em("Paris’", "Paris") and M.exact_match("Paris’", "Paris") == 1.0
    assert _v11_f1("“Paris”", "Paris") == 0 and M.token_f1("“Paris”", "Paris") == 1.0
    assert M.normalize_answer("It’s “Paris”") == _v11_normalize("It's \"Paris\"")
