"""The text topline: the gold transcript of every spoken turn → the chat LLM. The ceiling of what
the speech systems can reach, and the source of reference responses for response perplexity."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Sequence

from bench.plugins import Context
from bench.types import Generation, Request, System, TokenLogProbs
from systems.common import DecodeConfig, decode_config, llm_prompt_counter, to_messages
from systems.run_llm import shared_llm


class TextTopline(System):
    name = "text"
    hears_audio = False  # it answers the gold transcript

    def __init__(self, llm, cfg: DecodeConfig = DecodeConfig()):
        self.llm, self.cfg = llm, cfg

    def fingerprint(self) -> str:
        blob = json.dumps({"class": "TextTopline/2", "llm": self.llm.identity, **self.cfg.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        # The topline's reading of a spoken turn is its gold transcript; a transcript-only task
        # (ASR) needs nothing more.
        todo = [i for i, r in enumerate(requests) if not r.transcript_only]
        t0 = time.perf_counter()
        out = dict(zip(todo, self.llm.generate([to_messages(requests[i], lambda t: t.gold_text) for i in todo],
                                               [self.cfg.for_request(requests[i]) for i in todo])))
        per = (time.perf_counter() - t0) / max(len(todo), 1)
        return [Generation(text=out[i][0] if i in out else r.turn.gold_text, tokens=out[i][1] if i in out else 0,
                           transcript=r.turn.gold_text if r.turn.spoken else None,
                           seconds={"llm": per if i in out else 0.0}) for i, r in enumerate(requests)]

    def prompt_counter(self):
        return llm_prompt_counter(self.llm, 0.0)  # (a spoken turn is read as its gold transcript, which serve never has)

    def generate_from_embeds(self, embeds: Sequence, lengths: Sequence[tuple[int | None, tuple[str, ...]]] = ()
                             ) -> list[Generation]:
        """Greedy answers to whole, templated prompts given as input embeddings ((T, hidden) tensors): what
        `serve` answers on POST /v1/completions with prompt_embeds. `lengths`: each one's (max_new_tokens,
        stop strings) asked (default: this system's cap)."""
        table = self.llm.model.get_input_embeddings().weight
        bad = [tuple(e.shape) for e in embeds if e.dim() != 2 or e.shape[1] != table.shape[1]]
        if bad:
            raise ValueError(f"prompt embeddings must be (tokens, {table.shape[1]}) for {self.llm.identity}, got {bad[0]}")
        t0 = time.perf_counter()
        cfgs = [self.cfg.asked(n, s) for n, s in (lengths or [(None, ())] * len(embeds))]
        answers = self.llm.answers(self.llm.generate_embeds([e.to(table.device, table.dtype) for e in embeds], cfgs), cfgs)
        per = (time.perf_counter() - t0) / max(len(embeds), 1)
        return [Generation(text=text, tokens=n, seconds={"llm": per}) for text, n in answers]

    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        return self.llm.logprobs_batch([(to_messages(r, lambda t: t.gold_text), target) for r, target in pairs])


def build(ctx: Context) -> TextTopline:
    return TextTopline(shared_llm(ctx), decode_config(ctx))
