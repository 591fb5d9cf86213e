"""Benchmark: ChatLLM generation throughput against a bare `model.generate` loop on the same prompts.

The bare loop gets pre-tokenised, pre-padded tensors and counts only model time; the harness path
includes chat templating, padding and decoding. Tokens counted the same way for both (generated
tokens up to, not including, the first end-of-sequence token), so the ratio is the fraction of raw
model throughput that the harness keeps.
"""
from __future__ import annotations

import platform
import time

import torch

from systems.llm import DEFAULT_LLM, ChatLLM, DecodeConfig

TOPICS = ["rivers", "volcanoes", "the moon", "bread", "bicycles", "chess", "rain", "honey bees",
          "libraries", "trains", "glaciers", "owls", "paper", "bridges", "tea", "clocks",
          "deserts", "kites", "violins", "lighthouses", "salt", "maps", "coral reefs", "windmills"]


def perf_prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Tell me one interesting fact about {TOPICS[i % len(TOPICS)]}."}]
            for i in range(n)]


def _bare(llm: ChatLLM, batches, cfg: DecodeConfig) -> tuple[float, int]:
    tokens, secs = 0, 0.0
    for ids, mask in batches:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = llm.model.generate(input_ids=ids, attention_mask=mask, **llm._gen_kwargs(cfg))
        secs += time.perf_counter() - t0
        tokens += sum(len(r) for r in llm._cut(out[:, ids.shape[1]:]))
    return secs, tokens


def _harness(llm: ChatLLM, prompts, bs: int, cfg: DecodeConfig) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(prompts), bs):
        tokens += sum(n for _, n in llm.generate(prompts[i:i + bs], cfg))
    return time.perf_counter() - t0, tokens


def llm_throughput(spec: str | None = None, n_prompts: int = 16, max_new_tokens: int = 32,
                   batch_sizes=(1, 8), repeats: int = 2) -> str:
    llm = ChatLLM.load(spec or DEFAULT_LLM)
    cfg = DecodeConfig(max_new_tokens)
    prompts = perf_prompts(n_prompts)
    lines = [f"# ChatLLM throughput: {llm.identity}", "",
             f"{n_prompts} prompts, greedy, max_new_tokens={max_new_tokens}, torch threads "
             f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, best of {repeats}", "",
             "| batch | bare tok/s | harness tok/s | ratio | tokens |", "|---|---|---|---|---|"]
    _harness(llm, prompts[:2], 2, DecodeConfig(4))  # warm-up
    for bs in batch_sizes:
        batches = [llm._left_pad([llm.prompt_ids(m) for m in prompts[i:i + bs]]) for i in range(0, len(prompts), bs)]
        bare, harn = [], []
        for _ in range(repeats):  # alternate so that machine noise hits both alike
            bare.append(_bare(llm, batches, cfg))
            harn.append(_harness(llm, prompts, bs, cfg))
        (bs_, bt), (hs, ht) = min(bare), min(harn)
        if bt != ht:
            raise RuntimeError(f"batch {bs}: bare and harness generated different token counts ({bt} vs {ht})")
        lines.append(f"| {bs} | {bt / bs_:.1f} | {ht / hs:.1f} | {(ht / hs) / (bt / bs_):.3f} | {bt} |")
    return "\n".join(lines) + "\n"
