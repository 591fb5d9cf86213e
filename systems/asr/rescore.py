"""A second pass for CTC beam search: the beam's N best transcripts rescored by a chat LLM's
log-probability of each as a user turn (the first pass, n-gram shallow fusion, is systems/asr/lm.py)."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import torch

from systems.llm import ChatLLM, cache_keyword


@dataclass(frozen=True)
class RescoreConfig:
    """Second pass over the beam's N best transcripts with a neural LM: the chat LLM named `llm`."""
    llm: str = "smollm2"
    weight: float = 0.5   # on the LLM's natural-log probability of the transcript
    nbest: int = 16

    def as_dict(self) -> dict:
        return asdict(self)


class LLMRescorer:
    """Picks each utterance's transcript among its N best by beam score + weight x the chat LLM's
    log-probability of the transcript as a user turn (after the chat template's text before the
    user's words; the end-of-turn token included). The LLM loads on first use."""

    def __init__(self, cfg: RescoreConfig, llm=None):
        self.cfg = cfg
        self.llm = llm or ChatLLM.load(cfg.llm)
        self._prefix_state = None

    def _prefix(self):
        """The chat template up to where a user's words go, run once: (its KV cache, the log-probabilities
        of the first token after it)."""
        if self._prefix_state is None:
            mark = "\x00"
            tok = self.llm.tokenizer
            text = tok.apply_chat_template([{"role": "user", "content": mark}], tokenize=False)
            ids = torch.tensor([tok(text[: text.index(mark)], add_special_tokens=False)["input_ids"]], device=self.llm.device)
            out = self.llm.model(input_ids=ids, use_cache=True)
            self._prefix_state = out.cache, torch.log_softmax(out.logits[0, -1].float(), -1)
        return self._prefix_state

    per_trie = 32  # utterances a trie holds (see log_probs)

    def log_probs(self, groups: Sequence[Sequence[str]], batch: int = 8, width: int = 256) -> dict[str, float]:
        """{text: LLM log-probability} for the texts of every group (an utterance's N best), `per_trie`
        groups at a time (`_trie_log_probs`). A trie's first-token subtrees grow with the utterances it
        holds, and a subtree is one row: over all 450 utterances of a run's batch, the questions that open
        with " What" made one row of thousands of tokens, padded in every row beside it (2 cores, the 150
        spoken-QA questions: 19.8 s in one trie against 11.0 s in tries of 32, the same picks)."""
        out: dict[str, float] = {}
        for i in range(0, len(groups), self.per_trie):
            out.update(self._trie_log_probs(groups[i:i + self.per_trie], batch, width))
        return out

    @torch.inference_mode()
    def _trie_log_probs(self, groups: Sequence[Sequence[str]], batch: int, width: int) -> dict[str, float]:
        """{text: LLM log-probability} for the texts of every group (an utterance's N best: texts that
        mostly open alike), after the template's cached prefix (computed once).

        The texts' tokens form one trie (texts that open alike, in one group or in several, share
        their first nodes), and each node that some text continues is run once: its logits give its
        children's log-probabilities (a text's first token's come from the prefix's logits, its last
        token, the end of turn, is never run). Nodes go into rows of about `width` tokens, whole subtrees
        depth first, `batch` rows a forward; a node sits at the position of its depth after the prefix
        and attends to the prefix and its own ancestors only (a tree mask), so every text's tokens see
        exactly what they would see alone."""
        cache, first = self._prefix()
        texts: dict[str, list[int]] = {}
        for g in groups:
            if isinstance(g, str):
                raise TypeError("log_probs takes groups of texts (lists of str), not texts")
            for t in g:
                texts.setdefault(t, self.llm.target_ids(t or " "))
        trie = _Trie(texts.values())
        logp = {n: float(first[trie.token[n]]) for n in trie.kids[0].values()}  # node → log p(its token | path)
        rows = trie.rows(width)
        for i in range(0, len(rows), batch):
            logp.update(self._run(trie, rows[i:i + batch], cache))
        return {t: sum(logp[n] for n in trie.path(ids)) for t, ids in texts.items()}

    def _run(self, trie: "_Trie", rows: list[list[int]], cache) -> dict[int, float]:
        """One forward over `rows` (trie nodes, whole subtrees): the log-probability of every child of
        every node run."""
        dev, T = self.llm.device, cache.get_seq_length()
        L = max(map(len, rows))
        ids = torch.full((len(rows), L), self.llm.pad_id, dtype=torch.long)
        pos = torch.full((len(rows), L), T, dtype=torch.long)
        mask = torch.zeros((len(rows), 1, L, T + L), dtype=torch.bool)
        mask[..., :T] = True  # the prefix; a padding position sees only it
        for r, nodes in enumerate(rows):
            col = {n: c for c, n in enumerate(nodes)}
            for c, n in enumerate(nodes):
                ids[r, c], pos[r, c] = trie.token[n], T + trie.depth[n] - 1
                a = n
                while a:  # the node and its ancestors (a subtree's root is a child of the trie's root)
                    mask[r, 0, c, T + col[a]] = True
                    a = trie.parent[a]
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(rows))
        decoder = self.llm.model.get_decoder()
        hidden = decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         **{cache_keyword(decoder): past}, use_cache=True).last_hidden_state
        run = [(r, c, n) for r, nodes in enumerate(rows) for c, n in enumerate(nodes)]
        head = self.llm.model.get_output_embeddings()
        out: dict[int, float] = {}
        for k in range(0, len(run), 256):  # the LM head only where a child is predicted, a few hundred at a time
            part = run[k:k + 256]
            h = hidden[torch.tensor([r for r, _, _ in part]), torch.tensor([c for _, c, _ in part])]
            lp = torch.log_softmax(head(h).float(), -1)
            for (_, _, n), row in zip(part, lp):
                kids = list(trie.kids[n].values())
                got = row[torch.tensor([trie.token[x] for x in kids], device=row.device)].tolist()
                out.update(zip(kids, got))
        return out

    @staticmethod
    def pick(nbest: Sequence[Sequence[tuple[str, float]]], lm_logp: Mapping[str, float], weight: float) -> list[str]:
        return [max(n, key=lambda h: h[1] + weight * lm_logp[h[0]])[0] for n in nbest]

    def __call__(self, nbest: Sequence[Sequence[tuple[str, float]]]) -> list[str]:
        return self.pick(nbest, self.log_probs([[t for t, _ in n] for n in nbest]), self.cfg.weight)


class _Trie:
    """The token trie of a set of texts: node 0 the root (the end of the prefix); each other node a
    token after its parent's path."""

    def __init__(self, seqs):
        self.token, self.parent, self.depth, self.kids = [-1], [0], [0], [{}]
        for ids in seqs:
            n = 0
            for x in ids:
                if x not in self.kids[n]:
                    self.kids[n][x] = len(self.token)
                    self.token.append(x)
                    self.parent.append(n)
                    self.depth.append(self.depth[n] + 1)
                    self.kids.append({})
                n = self.kids[n][x]

    def path(self, ids) -> list[int]:
        """The nodes of a text's tokens."""
        out, n = [], 0
        for x in ids:
            n = self.kids[n][x]
            out.append(n)
        return out

    def rows(self, width: int) -> list[list[int]]:
        """The nodes that have children, in rows: each subtree of the root whole (depth first), packed
        into rows of at most `width` nodes (a larger subtree alone in its row)."""
        rows: list[list[int]] = []
        for top in sorted(self.kids[0].values(), key=lambda n: self.token[n]):
            nodes, stack = [], [top]
            while stack:
                n = stack.pop()
                if self.kids[n]:
                    nodes.append(n)
                    stack.extend(sorted(self.kids[n].values(), key=lambda m: -self.token[m]))
            if not nodes:
                continue
            if rows and len(rows[-1]) + len(nodes) <= width:
                rows[-1].extend(nodes)
            else:
                rows.append(nodes)
        return rows
