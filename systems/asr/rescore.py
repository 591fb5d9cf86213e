"""A second pass for CTC beam search: the beam's N best transcripts rescored by a chat LLM's
log-probability of each as a user turn (the first pass, n-gram shallow fusion, is systems/asr/lm.py)."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import torch

from systems.llm import ChatLLM, common_prefix


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

    @torch.inference_mode()
    def log_probs(self, groups: Sequence[Sequence[str]], batch: int = 32, columns: int = 8192) -> dict[str, float]:
        """{text: LLM log-probability} for the texts of every group (an utterance's N best: texts that
        mostly open alike), after the template's cached prefix (computed once).

        A group's texts are scored in token order, one per forward, each continuing the keys and values
        of the text before it up to where the two part (a trie walked depth first): only each text's
        own rest is run (and the one token before it, whose logits predict the rest's first). Groups
        run side by side, one row each (at most `batch` rows and `columns` cached positions in all);
        a row's cache keeps what earlier texts computed, and its mask shows it only its own path."""
        cache, first = self._prefix()
        jobs = []  # per group: [(text, its token ids, how many tokens it shares with the text before)]
        for g in groups:
            if isinstance(g, str):
                raise TypeError("log_probs takes groups of texts (lists of str), not texts")
            order = sorted((self.llm.target_ids(t or " "), t) for t in dict.fromkeys(g))
            jobs.append([(t, ids, common_prefix([ids, prev]) if k else 0)
                         for k, ((ids, t), (prev, _)) in enumerate(zip(order, [order[0]] + order))])
        width = lambda job: sum(len(ids) - max(0, l - 1) for _, ids, l in job)
        jobs = sorted((j for j in jobs if j), key=width)
        out: dict[str, float] = {}
        i = 0
        while i < len(jobs):
            k = i + 1
            while k < len(jobs) and k - i < batch and (k + 1 - i) * width(jobs[k]) <= columns:
                k += 1
            out.update(self._walk(jobs[i:k], cache, first))
            i = k
        return out

    def _walk(self, jobs, cache, first: torch.Tensor) -> dict[str, float]:
        dev, pad = self.llm.device, self.llm.pad_id
        T = cache.get_seq_length()
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(jobs))
        rows = list(range(len(jobs)))  # the groups still walking, one cache row each
        cols = [[] for _ in jobs]  # per group: the cache column of each token of its current path
        sums = [[0.0] for _ in jobs]  # per group: log-prob of its current path's first p tokens, p = 0, 1, ...
        out, C, step = {}, T, 0
        while rows:
            segs = []
            for r in rows:
                t, ids, l = jobs[r][step]  # l: tokens shared with the text before (0: none; else >= 1)
                start = max(0, l - 1)  # the shared token before the rest is run again: its logits predict the rest
                segs.append((t, ids, l, start, ids[start:]))
            W = max(len(sg) for *_, sg in segs)
            ids_t = torch.full((len(rows), W), pad, dtype=torch.long, device=dev)
            mask = torch.zeros((len(rows), C + W), dtype=torch.long, device=dev)
            mask[:, :T] = 1
            pos = torch.zeros((len(rows), W), dtype=torch.long, device=dev)
            for j, (r, (_, _, _, start, sg)) in enumerate(zip(rows, segs)):
                ids_t[j, : len(sg)] = torch.tensor(sg)
                mask[j, cols[r][:start]] = 1
                mask[j, C: C + len(sg)] = 1
                pos[j] = torch.arange(start, start + W, device=dev) + T
            logp = torch.log_softmax(self.llm.model(input_ids=ids_t, attention_mask=mask, position_ids=pos,
                                                    cache=past).logits.float(), -1)
            for j, (r, (t, ids, l, start, sg)) in enumerate(zip(rows, segs)):
                if l == 0:  # the whole text: its first token from the template's last logits
                    gained = [float(first[ids[0]])] + logp[j, : len(sg) - 1].gather(1, ids_t[j, 1: len(sg), None])[:, 0].tolist()
                    sums[r] = [0.0]
                else:  # logits at the re-run token predict the rest
                    gained = logp[j, : len(sg) - 1].gather(1, ids_t[j, 1: len(sg), None])[:, 0].tolist()
                    sums[r] = sums[r][: l + 1]
                for g in gained:
                    sums[r].append(sums[r][-1] + g)
                cols[r] = cols[r][:start] + list(range(C, C + len(sg)))
                out[t] = sums[r][-1]
            C, step = C + W, step + 1
            going = [j for j, r in enumerate(rows) if step < len(jobs[r])]
            if len(going) < len(rows):
                if going:
                    past.batch_select_indices(torch.tensor(going, device=dev))
                rows = [rows[j] for j in going]
        return out

    @staticmethod
    def pick(nbest: Sequence[Sequence[tuple[str, float]]], lm_logp: Mapping[str, float], weight: float) -> list[str]:
        return [max(n, key=lambda h: h[1] + weight * lm_logp[h[0]])[0] for n in nbest]

    def __call__(self, nbest: Sequence[Sequence[tuple[str, float]]]) -> list[str]:
        return self.pick(nbest, self.log_probs([[t for t, _ in n] for n in nbest]), self.cfg.weight)
