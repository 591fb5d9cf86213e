"""Scorers. Normalisation happens here, at scoring time; raw outputs are stored untouched."""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Sequence


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
# typographic quotes and apostrophes → their ASCII forms (then dropped as punctuation): a model's `Paris’`
# is `Paris`. SQuAD v1.1 keeps them (they are not in string.punctuation): the one place this differs from it
_TYPOGRAPHIC = str.maketrans({"‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "`": "'", "´": "'",
                              "“": '"', "”": '"', "„": '"', "‟": '"', "″": '"'})


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation and articles, squeeze whitespace; typographic
    quotes folded to ASCII first."""
    s = s.translate(_TYPOGRAPHIC).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1 token F1 after normalisation (0 when either side is empty, both included, as v1.1)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


_TENS_HYPHEN = re.compile(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)-", re.IGNORECASE)


@lru_cache(maxsize=1)
def _numbers():
    from transformers.models.whisper.english_normalizer import EnglishNumberNormalizer

    return EnglishNumberNormalizer()


@lru_cache(maxsize=16384)
def _with_digits(s: str) -> str:
    """normalize_answer with numbers written in words as digits, by Whisper's number normaliser (`seven`
    → `7`, `one hundred and five` → `105`, `second` → `2nd`), applied to both sides alike."""
    s = normalize_answer(_TENS_HYPHEN.sub(r"\1 ", s))  # (`seventy-seven`: SQuAD's rule would join the words)
    try:
        return normalize_answer(_numbers()(s))
    except (ValueError, AssertionError, ZeroDivisionError):  # a number expression it cannot parse: as written
        return s


def contains_answer(prediction: str, gold: str) -> float:
    """1 if the normalised gold answer occurs as a whole-word span of the normalised prediction, numbers
    in words and in digits alike (`seven` = `7`)."""
    p, g = _with_digits(prediction), _with_digits(gold)
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
    from rouge_score import rouge_scorer, tokenizers

    class Memoised:  # rouge-score's own tokenizer (Porter stemmer), each text tokenised once
        tokenize = staticmethod(lru_cache(maxsize=8192)(tokenizers.DefaultTokenizer(use_stemmer=True).tokenize))

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Memoised())


@lru_cache(maxsize=8192)
def _rouge_scores(reference: str, prediction: str) -> dict:
    return _rouge().score(reference, prediction)  # every kind at once: rouge_1, _2 and _l share it


def rouge(prediction: str, references: Sequence[str], kind: str) -> float:
    """ROUGE F-measure (rouge-score, Porter stemmer), the best over the references."""
    return max(_rouge_scores(r, prediction)[kind].fmeasure for r in references)


# Batched aggregates (`aggregate.batched`, see bench/scoring.py): the same numbers as the scalar
# functions above, operation for operation, over a (B × k) matrix of bootstrap-resampled totals at once.

def _chrf_batched(totals) -> "np.ndarray":
    """chrf_from_statistics of each row: sacrebleu's CHRF._compute_f_score, vectorised."""
    import numpy as np

    c = _chrf()
    t = np.asarray(totals, dtype=float)
    eps, factor = 1e-16, c.beta ** 2
    score = np.zeros(len(t))
    avg_prec, avg_rec, effective = np.zeros(len(t)), np.zeros(len(t)), np.zeros(len(t), dtype=int)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(c.order):
            n_hyp, n_ref, n_match = t[:, 3 * i], t[:, 3 * i + 1], t[:, 3 * i + 2]
            prec = np.where(n_hyp > 0, n_match / n_hyp, eps)
            rec = np.where(n_ref > 0, n_match / n_ref, eps)
            denom = factor * prec + rec
            score = score + np.where(denom > 0, (1 + factor) * prec * rec / denom, eps)
            both = (n_hyp > 0) & (n_ref > 0)
            avg_prec = avg_prec + np.where(both, prec, 0.0)
            avg_rec = avg_rec + np.where(both, rec, 0.0)
            effective = effective + both
        if c.eps_smoothing:
            return 100 * score / c.order
        avg_prec = np.where(effective > 0, avg_prec / np.maximum(effective, 1), 0.0)
        avg_rec = np.where(effective > 0, avg_rec / np.maximum(effective, 1), 0.0)
        f = (1 + factor) * avg_prec * avg_rec
        f = f / ((factor * avg_prec) + avg_rec)
        return np.where((avg_prec + avg_rec) != 0, 100 * f, 0.0)


def _bleu_batched(totals) -> "np.ndarray":
    """bleu_from_statistics of each row: sacrebleu's BLEU.compute_bleu (exp smoothing, the corpus
    default), vectorised; logs and exps per element with `math`, as sacrebleu takes them."""
    import math

    import numpy as np

    b = _bleu()
    if b.smooth_method != "exp" or b.effective_order:  # (not this harness's configuration)
        return np.array([bleu_from_statistics(row) for row in totals], dtype=float)
    t = np.asarray(totals, dtype=float)
    order = b.max_ngram_order
    sys_len, ref_len = t[:, 0].astype(np.int64), t[:, 1].astype(np.int64)
    correct, total = t[:, 2:2 + order], t[:, 2 + order:2 + 2 * order]
    precisions = np.zeros((len(t), order))
    smooth = np.ones(len(t))
    alive = np.ones(len(t), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for n in range(order):
            alive &= total[:, n] != 0
            zero = alive & (correct[:, n] == 0)
            smooth = np.where(zero, smooth * 2, smooth)
            precisions[:, n] = np.where(zero, 100. / (smooth * total[:, n]),
                                        np.where(alive, 100. * correct[:, n] / total[:, n], 0.0))
    # sacrebleu: bp · exp(Σ log p / order), log 0 taken as -9999999999; brevity penalty exp(1 - ref/sys)
    logs = np.array([math.log(x) if x != 0.0 else -9999999999 for x in precisions.ravel().tolist()])
    logs = logs.reshape(len(t), order)
    mean_log = logs[:, 0] if order else np.zeros(len(t))
    for n in range(1, order):
        mean_log = mean_log + logs[:, n]  # summed in sacrebleu's order
    mean_log = mean_log / order
    score = np.array([math.exp(x) for x in mean_log.tolist()])
    bp = np.array([(math.exp(1 - r / s) if s > 0 else 0.0) if s < r else 1.0
                   for s, r in zip(sys_len.tolist(), ref_len.tolist())])
    return np.where(correct.any(axis=1), bp * score, 0.0)


def _ratio_batched(totals) -> "np.ndarray":
    import numpy as np

    t = np.asarray(totals, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t[:, 1] != 0, t[:, 0] / t[:, 1], float("nan"))


chrf_from_statistics.batched = _chrf_batched
bleu_from_statistics.batched = _bleu_batched
ratio.batched = _ratio_batched
