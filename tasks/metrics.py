"""Scorers. Normalisation happens here, at scoring time; raw outputs are stored untouched."""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Sequence


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation and articles, squeeze whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 after normalisation."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, gold: str) -> float:
    """1 if the normalised gold answer occurs as a whole-word span of the normalised prediction."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if not g:
        return 0.0
    return float(re.search(rf"(^| ){re.escape(g)}( |$)", p) is not None)


def best_over(fn, prediction: str, golds: Sequence[str]) -> float:
    """SQuAD-style: the best score over all gold aliases."""
    return max((fn(prediction, g) for g in golds), default=0.0)


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def chrf_statistics(hypothesis: str, reference: str) -> list[float]:
    """sacrebleu chrF sufficient statistics of one segment (summed over a corpus by the harness)."""
    return list(_chrf()._extract_corpus_statistics([hypothesis], [[reference]])[0])


def chrf_from_statistics(total) -> float:
    """Corpus chrF (character 6-grams, β=2, sacrebleu defaults) from summed segment statistics."""
    return float(_chrf()._compute_score_from_stats(list(total)).score)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus chrF with one reference per hypothesis (for checks and golden tests)."""
    return _chrf().corpus_score(list(hypotheses), [list(references)]).score


@lru_cache(maxsize=1)
def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU()


def bleu_statistics(hypothesis: str, references: Sequence[str]) -> list[float]:
    """sacrebleu BLEU sufficient statistics of one segment against its references."""
    return list(_bleu()._extract_corpus_statistics([hypothesis], [[r] for r in references])[0])


def bleu_from_statistics(total) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing) from summed statistics."""
    return float(_bleu()._compute_score_from_stats(list(total)).score)


def signatures() -> dict[str, str]:
    """sacrebleu signatures of the BLEU and chrF configurations used (one reference per segment)."""
    from sacrebleu.metrics import BLEU, CHRF

    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        metric.corpus_score(["a"], [["a"]])  # a signature states the number of references: set it
        out[name] = str(metric.get_signature())
    return out


def ratio(total) -> float:
    """Summed (numerator, denominator) as a float; NaN for an empty denominator."""
    return float(total[0] / total[1]) if total[1] else float("nan")


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, references: Sequence[str], kind: str) -> float:
    """ROUGE F-measure (rouge-score, Porter stemmer), the best over the references."""
    return max(_rouge().score(r, prediction)[kind].fmeasure for r in references)
