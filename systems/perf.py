"""Benchmark: the harness's ChatLLM decoding against a bare `model.generate` loop and against a
one-item-at-a-time loop (the VoiceBench way), on one fixed prompt set, side by side in one run.

- bare: `model.generate` on consecutive batches of pre-tokenised, pre-padded prompts (model time only);
- one at a time: per prompt, the chat template, `model.generate` on that one prompt, decoding;
- harness: `ChatLLM.generate` (templating, continuous batching with `batch` rows, decoding).

Tokens are counted the same way for all three (generated tokens up to, not including, the first
end-of-sequence token) and must agree, since all three decode greedily. The compute bound is this
machine's fp32 matmul rate (measured here) over the model's 2 × parameters FLOPs per token.
"""
from __future__ import annotations

import platform
import sys
import time

import torch

from systems.common import cut_at_eos
from systems.llm import DEFAULT_LLM, ChatLLM, DecodeConfig

TOPICS = ["rivers", "volcanoes", "the moon", "bread", "bicycles", "chess", "rain", "honey bees",
          "libraries", "trains", "glaciers", "owls", "paper", "bridges", "tea", "clocks",
          "deserts", "kites", "violins", "lighthouses", "salt", "maps", "coral reefs", "windmills"]
QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Name a primary colour.",
             "What is 7 times 8?", "Who wrote Romeo and Juliet?", "What gas do plants absorb?",
             "Which planet is closest to the sun?", "What is the opposite of cold?", "How many days are in a week?",
             "What language is spoken in Brazil?", "What is frozen water called?", "Say hello.",
             "What is the largest ocean?", "What colour is a ripe banana?", "How many sides does a triangle have?",
             "What do bees make?", "Reply with yes or no: is the sun a star?", "What is the boiling point of water?",
             "Who painted the Mona Lisa?", "What is the chemical symbol for gold?", "Name a fruit.",
             "What is the square root of 81?", "In which continent is Kenya?", "What animal says moo?"]


def perf_prompts(n: int) -> list[list[dict]]:
    """A fixed mix of open prompts (answers run to the limit) and short questions (answers end early)."""
    texts = [t for pair in zip([f"Tell me one interesting fact about {x}." for x in TOPICS], QUESTIONS) for t in pair]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n)]


def matmul_gflops(seconds: float = 1.0, n: int = 1024) -> float:
    """This machine's fp32 matmul rate with the current torch threads (best of a few)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def _bare(llm: ChatLLM, ids_list, bs: int, cfg: DecodeConfig) -> tuple[float, list[list[int]]]:
    batches = [llm._left_pad(ids_list[i:i + bs]) for i in range(0, len(ids_list), bs)]
    out, secs = [], 0.0
    for ids, mask in batches:
        t0 = time.perf_counter()
        with torch.inference_mode():
            gen = llm.model.generate(input_ids=ids, attention_mask=mask, **llm._gen_kwargs(cfg))
        secs += time.perf_counter() - t0
        out += cut_at_eos(gen[:, ids.shape[1]:], llm.eos_ids)
    return secs, out


def _one_at_a_time(llm: ChatLLM, prompts, cfg: DecodeConfig) -> tuple[float, int]:
    t0, tokens = time.perf_counter(), 0
    for m in prompts:
        ids = torch.tensor([llm.prompt_ids(m)], device=llm.device)
        with torch.inference_mode():
            gen = llm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **llm._gen_kwargs(cfg))
        new = cut_at_eos(gen[:, ids.shape[1]:], llm.eos_ids)[0]
        llm.tokenizer.decode(new, skip_special_tokens=True)
        tokens += len(new)
    return time.perf_counter() - t0, tokens


def _harness(llm: ChatLLM, prompts, bs: int, cfg: DecodeConfig) -> tuple[float, list[tuple[str, int]]]:
    t0 = time.perf_counter()
    out = llm.generate(prompts, cfg, rows=bs)
    return time.perf_counter() - t0, out


def llm_throughput(spec: str | None = None, n_prompts: int = 64, max_new_tokens: int = 48,
                   batch_sizes=(1, 8, 32, 64), repeats: int = 1, llm: ChatLLM | None = None) -> str:
    llm = llm or ChatLLM.load(spec or DEFAULT_LLM)
    cfg = DecodeConfig(max_new_tokens)
    prompts = perf_prompts(n_prompts)
    ids_list = [llm.prompt_ids(m) for m in prompts]
    llm.generate(prompts[:2], DecodeConfig(4))  # warm-up: weights loaded, first-call costs paid
    flops = 2 * sum(p.numel() for p in llm.model.parameters())
    bound = matmul_gflops() * 1e9 / flops
    t1, tok1 = _one_at_a_time(llm, prompts, cfg)
    n = len(prompts)
    print(f"one at a time: {tok1 / t1:.1f} tok/s, {n / t1:.2f} items/s", file=sys.stderr, flush=True)
    lines = [f"# ChatLLM decoding: {llm.identity}", "",
             f"{n} prompts (open and short questions), greedy, max_new_tokens={max_new_tokens}, torch threads "
             f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, best of {repeats}; "
             f"compute bound {bound:.0f} tok/s ({flops / 1e9:.2f} GFLOP a token at the measured fp32 matmul rate)", "",
             f"One at a time (template, `generate` on one prompt, decode; the VoiceBench loop): "
             f"{tok1 / t1:.1f} tok/s, {n / t1:.2f} items/s", "",
             "| batch | bare tok/s | bare items/s | harness tok/s | harness items/s | harness ÷ bare | "
             "harness ÷ one at a time | harness ÷ bound | tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    best = {"bare": (0.0, 0), "harness": (0.0, 0)}
    for bs in batch_sizes:
        bare, harn = [], []
        for _ in range(repeats):  # alternate so that machine noise hits both alike
            bare.append(_bare(llm, ids_list, bs, cfg))
            harn.append(_harness(llm, prompts, bs, cfg))
        (b_s, b_out), (h_s, h_out) = min(bare, key=lambda x: x[0]), min(harn, key=lambda x: x[0])
        bt, ht = sum(map(len, b_out)), sum(k for _, k in h_out)
        if bt != ht or ht != tok1:
            raise RuntimeError(f"batch {bs}: the loops generated different token counts "
                               f"(bare {bt}, harness {ht}, one at a time {tok1})")
        br, hr = bt / b_s, ht / h_s
        best["bare"], best["harness"] = max(best["bare"], (br, bs)), max(best["harness"], (hr, bs))
        lines.append(f"| {bs} | {br:.1f} | {n / b_s:.2f} | {hr:.1f} | {n / h_s:.2f} | {hr / br:.2f} | "
                     f"{hr / (tok1 / t1):.2f} | {hr / bound:.2f} | {ht} |")
        print(lines[-1], file=sys.stderr, flush=True)
    (hb, hbs), (bb, bbs) = best["harness"], best["bare"]
    lines += ["", f"Best: harness {hb:.1f} tok/s (batch {hbs}) against bare {bb:.1f} tok/s (batch {bbs}): "
              f"{hb / bb:.2f}×; against one at a time {hb / (tok1 / t1):.2f}×."]
    return "\n".join(lines) + "\n"
