"""Word n-gram language model and CTC prefix beam search with shallow fusion.

The LM is an interpolated Kneser-Ney n-gram written in the standard ARPA format (so a KenLM-built
`.arpa` works too), estimated from the ASR training text, with its unigram distribution mixed with
an English word-frequency list (wordfreq's `large_en`, from a pinned PyPI wheel): the training text
alone covers only ~84 % of the words of everyday speech, and a CTC decoder that fuses a closed
vocabulary can never output the rest.

Beam search (`ctc_beam_search`) follows the CTC prefix search of Hannun et al. (2014), scored as
    log P_ctc(prefix) + alpha * log P_lm(complete words) + beta * #words
with a penalty when the unfinished last word is not the prefix of any word the LM knows (the
character trie check of pyctcdecode, which we cannot install beside numpy 2). Its N best can then be
rescored by a chat LLM (systems/asr/rescore.py); the `train lm` recipe is systems/asr/lm_recipe.py.
"""
from __future__ import annotations

import gzip
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

LN10 = math.log(10.0)
NEG_INF = -math.inf
BOS, EOS, UNK = "<s>", "</s>", "<unk>"


# ---------------------------------------------------------------------------------------------
# Estimation: interpolated Kneser-Ney, written as ARPA (probabilities and back-off weights, log10)
# ---------------------------------------------------------------------------------------------

def build_arpa(sentences: Iterable[str], order: int = 3, extra_unigrams: Mapping[str, float] | None = None,
               extra_weight: float = 0.5, unk_log10: float = -8.0) -> str:
    """ARPA text of an interpolated Kneser-Ney `order`-gram over whitespace-split `sentences`.

    `extra_unigrams` (word -> relative frequency) is mixed into the unigram level with weight
    `extra_weight`; higher orders back off to that mixture, so its words become speakable."""
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k][k-gram]
    for s in sentences:
        toks = (BOS, *s.split(), EOS)
        for k in range(1, order + 1):
            for i in range(len(toks) - k + 1):
                counts[k][toks[i:i + k]] += 1
    # Kneser-Ney: below the top order, count distinct left contexts (except n-grams starting at <s>)
    kn: list[Counter] = [Counter() for _ in range(order + 1)]
    kn[order] = counts[order]
    for k in range(1, order):
        for g in counts[k + 1]:
            kn[k][g[1:]] += 1
        for g, c in counts[k].items():
            if g[0] == BOS:
                kn[k][g] = c
    probs: list[dict] = [dict() for _ in range(order + 1)]
    backoff: list[dict] = [dict() for _ in range(order + 1)]
    # unigrams: discounted continuation counts, the freed mass spread uniformly, then the mixture
    vocab = {g[0] for g in kn[1]} | set(extra_unigrams or ())
    vocab.discard(BOS)
    d1 = _discount(kn[1])
    total1 = sum(c for g, c in kn[1].items() if g[0] != BOS)
    freed = d1 * sum(1 for g in kn[1] if g[0] != BOS) / total1
    uni = {w: max(kn[1].get((w,), 0) - d1, 0.0) / total1 + freed / len(vocab) for w in vocab}
    if extra_unigrams:
        z = sum(extra_unigrams.values())
        uni = {w: (1 - extra_weight) * p + extra_weight * extra_unigrams.get(w, 0.0) / z for w, p in uni.items()}
    probs[1] = {(w,): p for w, p in uni.items()}
    for k in range(2, order + 1):
        d = _discount(kn[k])
        by_ctx: dict[tuple, list] = defaultdict(list)
        for g, c in kn[k].items():
            by_ctx[g[:-1]].append((g[-1], c))
        for ctx, rows in by_ctx.items():
            total = sum(c for _, c in rows)
            gamma = d * len(rows) / total
            backoff[k - 1][ctx] = gamma
            for w, c in rows:
                probs[k][ctx + (w,)] = max(c - d, 0.0) / total + gamma * _interp(probs, backoff, ctx[1:], w)
    lines = ["", "\\data\\"]
    n_uni = len(probs[1]) + 2  # + <s> and <unk>
    lines += [f"ngram 1={n_uni}"] + [f"ngram {k}={len(probs[k])}" for k in range(2, order + 1)] + [""]
    for k in range(1, order + 1):
        lines.append(f"\\{k}-grams:")
        if k == 1:
            lines.append(f"{unk_log10:.6f}\t{UNK}\t0")
            lines.append(f"-99\t{BOS}\t{math.log10(backoff[1].get((BOS,), 1.0)):.6f}")
        for g in sorted(probs[k]):
            p = math.log10(probs[k][g])
            if k < order:
                lines.append(f"{p:.6f}\t{' '.join(g)}\t{math.log10(backoff[k].get(g, 1.0)):.6f}")
            else:
                lines.append(f"{p:.6f}\t{' '.join(g)}")
        lines.append("")
    lines.append("\\end\\")
    return "\n".join(lines) + "\n"


def _discount(counts: Counter) -> float:
    """Ney's absolute discount n1 / (n1 + 2 n2), kept inside (0.1, 0.9)."""
    n = Counter(c for c in counts.values() if c <= 2)
    d = n[1] / (n[1] + 2 * n[2]) if n[1] + n[2] else 0.5
    return min(max(d, 0.1), 0.9)


def _interp(probs: list[dict], backoff: list[dict], ctx: tuple, w: str) -> float:
    """P(w | ctx) from the already-estimated lower orders: the stored value of a seen n-gram, else
    the context's back-off weight times the next-shorter context's probability."""
    if not ctx:
        return probs[1].get((w,), 0.0)
    p = probs[len(ctx) + 1].get(ctx + (w,))
    if p is not None:
        return p
    return backoff[len(ctx)].get(ctx, 1.0) * _interp(probs, backoff, ctx[1:], w)


# ---------------------------------------------------------------------------------------------
# Query
# ---------------------------------------------------------------------------------------------

class NgramLM:
    """An ARPA back-off n-gram: `score(context, word)` is log10 P(word | last order-1 words)."""

    def __init__(self, table: dict[tuple, tuple[float, float]], order: int):
        self.table, self.order = table, order
        self.vocab = {g[0] for g in table if len(g) == 1} - {BOS, UNK}
        self.unk = table.get((UNK,), (-8.0, 0.0))[0]
        self.prefixes = {w[:i] for w in self.vocab for i in range(1, len(w) + 1)}
        self._memo: dict[tuple, float] = {}

    @classmethod
    def load(cls, path: str | Path) -> "NgramLM":
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        table, order, k = {}, 0, 0
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("ngram ") or line == "\\data\\":
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    k = int(line[1:].split("-")[0])
                    order = max(order, k)
                    continue
                if line == "\\end\\":
                    break
                tabs = "\t" in line
                parts = line.split("\t") if tabs else line.split()
                try:
                    if k == 0 or len(parts) < (2 if tabs else k + 1):
                        raise ValueError("outside an n-gram section or too few fields")
                    words = tuple(parts[1].split()) if tabs else tuple(parts[1:1 + k])
                    bo = float(parts[-1]) if len(parts) > (2 if tabs else k + 1) else 0.0
                    table[words] = (float(parts[0]), bo)
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not an ARPA n-gram line ({e}): {line[:60]!r}") from None
        if not table:
            raise ValueError(f"{path}: no n-grams found; is it an ARPA file?")
        return cls(table, order)

    def score(self, context: tuple, word: str) -> float:
        context = context[-(self.order - 1):] if self.order > 1 else ()
        key = (*context, word)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._score(context, word)
        return hit

    def _score(self, context: tuple, word: str) -> float:
        if word not in self.vocab and word != EOS:
            return self.unk
        bo = 0.0
        while True:
            entry = self.table.get((*context, word))
            if entry is not None:
                return bo + entry[0]
            if not context:
                return self.unk
            bo += self.table.get(context, (0.0, 0.0))[1]
            context = context[1:]

    def sentence_log10(self, words: Sequence[str]) -> float:
        ctx, total = (BOS,), 0.0
        for w in (*words, EOS):
            total += self.score(ctx, w)
            ctx = (*ctx, w)
        return total


# ---------------------------------------------------------------------------------------------
# CTC prefix beam search with shallow fusion
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeamConfig:
    beam: int = 32
    alpha: float = 0.5        # LM weight (on natural-log LM probabilities)
    beta: float = 1.0         # word insertion bonus
    partial_penalty: float = -6.0  # unfinished word that no LM word starts with (natural log)
    token_min_logp: float = -6.0   # tokens below this log-probability in a frame are not expanded
    prune_logp: float = -12.0      # beams this far below the best are dropped

    def as_dict(self) -> dict:
        return asdict(self)


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class _Scorer:
    """LM part of a prefix's score, memoised by text: alpha*ln P(complete words) + beta*#words +
    the partial-word penalty."""

    def __init__(self, lm: NgramLM | None, cfg: BeamConfig):
        self.lm, self.cfg = lm, cfg
        self.memo: dict[str, float] = {"": 0.0}
        self.words_memo: dict[tuple, float] = {(): 0.0}

    def fused(self, context: tuple, word: str) -> float:
        """alpha * ln P(word | context): the LM's log10 probability on the acoustic model's scale."""
        return self.cfg.alpha * LN10 * self.lm.score(context, word)

    def words(self, ws: tuple) -> float:
        hit = self.words_memo.get(ws)
        if hit is None:
            hit = self.words(ws[:-1]) + self.fused((BOS, *ws[:-1]), ws[-1]) + self.cfg.beta
            self.words_memo[ws] = hit
        return hit

    def __call__(self, text: str) -> float:
        hit = self.memo.get(text)
        if hit is not None:
            return hit
        if self.lm is None:
            hit = 0.0
        else:
            cut = text.rfind(" ")
            complete = tuple(text[:cut].split()) if cut >= 0 else ()
            partial = text[cut + 1:]
            hit = self.words(complete)
            if partial and partial not in self.lm.prefixes:
                hit += self.cfg.partial_penalty
        self.memo[text] = hit
        return hit

    def final(self, text: str) -> float:
        if self.lm is None:
            return 0.0
        ws = tuple(text.split())
        return self.words(ws) + self.fused((BOS, *ws), EOS)


def ctc_beam_search(logp: np.ndarray, pieces: Sequence[str], blank: int, lm: NgramLM | None = None,
                    cfg: BeamConfig = BeamConfig(), scorer: _Scorer | None = None, nbest: int = 0):
    """Best transcript for one utterance's (T, V) log-probabilities. `pieces[i]` is token i's text,
    with a leading space for a word-initial token (SentencePiece "▁" already replaced). With `nbest`,
    the best `nbest` distinct transcripts instead, as (text, score) pairs, best first (score = CTC
    log-probability + the LM terms)."""
    scorer = scorer or _Scorer(lm, cfg)
    beams: dict[str, list] = {"": [0.0, NEG_INF, -1]}  # text -> [log p ending in blank, in non-blank, last token]
    logp = np.asarray(logp, dtype=np.float64)
    for t in range(logp.shape[0]):
        row = logp[t]
        cand = [int(i) for i in np.flatnonzero(row >= cfg.token_min_logp) if i != blank]
        if not cand:
            cand = [int(row.argmax())] if int(row.argmax()) != blank else []
        lp_blank = float(row[blank])
        nxt: dict[str, list] = {}

        def add(text, pb, pnb, last):
            e = nxt.get(text)
            if e is None:
                nxt[text] = [pb, pnb, last]
            else:
                e[0], e[1] = _lse(e[0], pb), _lse(e[1], pnb)

        for text, (pb, pnb, last) in beams.items():
            total = _lse(pb, pnb)
            add(text, total + lp_blank, NEG_INF, last)
            for i in cand:
                lp = float(row[i])
                if i == last:
                    add(text, NEG_INF, pnb + lp, last)      # a repeat collapses into the same prefix
                    if pb > NEG_INF:                        # a blank in between: a new token
                        add(_extend(text, pieces[i]), NEG_INF, pb + lp, i)
                else:
                    add(_extend(text, pieces[i]), NEG_INF, total + lp, i)
        ranked = sorted(((_lse(e[0], e[1]) + scorer(text), text, e) for text, e in nxt.items()), reverse=True)
        floor = ranked[0][0] + cfg.prune_logp  # each prefix scored once per frame
        beams = {text: e for score, text, e in ranked[: cfg.beam] if score >= floor}
    ranked = sorted(((_lse(e[0], e[1]) + scorer.final(text.strip()), " ".join(text.split()))
                     for text, e in beams.items()), reverse=True)
    if not nbest:
        return ranked[0][1]
    seen: dict[str, float] = {}
    for score, text in ranked:  # prefixes differing only in a trailing space give the same text
        seen.setdefault(text, score)
    return list(seen.items())[:nbest]


def _extend(text: str, piece: str) -> str:
    if piece.startswith(" ") and (not text or text.endswith(" ")):
        piece = piece.lstrip(" ")
    return text + piece


def ctc_pieces(tokenizer) -> list[str]:
    """Each token id's text for beam search: SentencePiece/Metaspace "▁" becomes a leading space."""
    toks = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return ["" if t is None or t in tokenizer.all_special_tokens else t.replace("▁", " ") for t in toks]


# ---------------------------------------------------------------------------------------------
# English word frequencies (the unigram mixture; the `train lm` recipe is systems/asr/lm_recipe.py)
# ---------------------------------------------------------------------------------------------

def _build_wordfreq(wheels: Sequence[Path], out: Path) -> None:
    import zipfile

    with zipfile.ZipFile(wheels[0]) as z:
        (out / "large_en.msgpack.gz").write_bytes(z.read("wordfreq/data/large_en.msgpack.gz"))


def _wordfreq_asset():
    from bench.assets import Asset, Wheel

    return Asset(name="wordfreq-en", build=_build_wordfreq, size_mb=57, wheels=(
        Wheel("wordfreq", "3.1.1", "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473"),))


def english_word_frequencies(top: int = 50000) -> dict[str, float]:
    """The `top` most frequent English words (ASR alphabet only) with their relative frequencies,
    from wordfreq's `large_en` list (CC-BY-SA 4.0; Wikipedia, subtitles, news, books, web text)."""
    import re

    import msgpack

    from bench.assets import resolve

    with gzip.open(resolve(_wordfreq_asset()) / "large_en.msgpack.gz") as f:
        data = msgpack.load(f, raw=False)
    if not isinstance(data[0], dict) or data[0].get("format") != "cB":
        raise ValueError("unexpected wordfreq data format (expected centibel buckets)")
    ok = re.compile(r"[a-z]+(?:'[a-z]+)?")
    out: dict[str, float] = {}
    for i, bucket in enumerate(data[1:]):  # bucket i holds the words of frequency 10^(-i/100)
        for w in bucket:
            if ok.fullmatch(w) and w not in out:
                out[w] = 10 ** (-i / 100)
                if len(out) >= top:
                    return out
    return out
