"""Benchmark: the harness's ChatLLM decoding against a bare `model.generate` loop and against a
one-item-at-a-time loop (the VoiceBench way), on one fixed prompt set, side by side in one run.

- bare: `model.generate` on consecutive batches of pre-tokenised, pre-padded prompts (model time only);
- one at a time: per prompt, the chat template, `model.generate` on that one prompt, decoding;
- harness: `ChatLLM.generate` (templating, continuous batching with `batch` rows, decoding).

Tokens are counted the same way for all three (generated tokens up to, not including, the first
end-of-sequence token), and the three must generate the same token ids, since all three decode
greedily: a table is only written when they do. The compute bound is this machine's fp32 matmul
rate (measured here) over the model's 2 × parameters FLOPs per token.

The levers of results/perf_llm.md are options of the same measurement: `attn` (the model's attention
implementation), `dtype`, `threads` and `interop_threads` (torch's); the process's OpenMP wait policy
is set by the CLI (`bench.cli.quiet_threads`: passive unless OMP_WAIT_POLICY is set).
"""
from __future__ import annotations

import os
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


def _one_at_a_time(llm: ChatLLM, prompts, cfg: DecodeConfig) -> tuple[float, list[list[int]]]:
    t0, out = time.perf_counter(), []
    for m in prompts:
        ids = torch.tensor([llm.prompt_ids(m)], device=llm.device)
        with torch.inference_mode():
            gen = llm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **llm._gen_kwargs(cfg))
        new = cut_at_eos(gen[:, ids.shape[1]:], llm.eos_ids)[0]
        llm.tokenizer.decode(new, skip_special_tokens=True)
        out.append(new)
    return time.perf_counter() - t0, out


def _harness(llm: ChatLLM, prompts, bs: int, cfg: DecodeConfig) -> tuple[float, list[list[int]]]:
    """`ChatLLM.generate`'s work (template, decode, text), keeping the token ids to compare."""
    t0 = time.perf_counter()
    ids = llm.generate_ids([llm.prompt_ids(m) for m in prompts], cfg, rows=bs)
    llm.answers(ids)
    return time.perf_counter() - t0, ids


def first_difference(x: list[int], y: list[int]) -> int:
    """The first token at which two answers differ (the shorter one's length where one extends the other)."""
    return next((j for j, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))


def same_tokens(a: list[list[int]], b: list[list[int]]) -> str | None:
    """None where two loops generated the same ids for every prompt, else where they first differ."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            k = first_difference(x, y)
            return f"prompt {i}, token {k}: {x[k:k + 4]} against {y[k:k + 4]}"
    return None if len(a) == len(b) else f"{len(a)} against {len(b)} answers"


def llm_throughput(spec: str | None = None, n_prompts: int = 64, max_new_tokens: int = 48,
                   batch_sizes=(1, 8, 32, 64), repeats: int = 1, llm: ChatLLM | None = None,
                   attn: str | None = None, dtype: str = "float32", threads: int | None = None,
                   interop_threads: int | None = None, one_at_a_time: bool = True) -> str:
    """The table of results/perf_llm.md. `attn`, `dtype`, `threads`, `interop_threads`: the levers (see
    the module's doc); `one_at_a_time`: False skips that loop (its column then reads –)."""
    if threads:
        torch.set_num_threads(threads)
    if interop_threads:
        torch.set_num_interop_threads(interop_threads)  # (only before the process's first parallel work)
    llm = llm or ChatLLM.load(spec or DEFAULT_LLM, dtype=dtype, attn_implementation=attn)
    cfg = DecodeConfig(max_new_tokens)
    prompts = perf_prompts(n_prompts)
    ids_list = [llm.prompt_ids(m) for m in prompts]
    llm.generate(prompts[:2], DecodeConfig(4))  # warm-up: weights loaded, first-call costs paid
    flops = 2 * sum(p.numel() for p in llm.model.parameters())
    bound = matmul_gflops() * 1e9 / flops
    n = len(prompts)
    single = None  # (tok/s, items/s, ids) of the one-at-a-time loop
    if one_at_a_time:
        t1, ids1 = _one_at_a_time(llm, prompts, cfg)
        single = (sum(map(len, ids1)) / t1, n / t1, ids1)
        print(f"one at a time: {single[0]:.1f} tok/s, {single[1]:.2f} items/s", file=sys.stderr, flush=True)
    attn_used = getattr(llm.model.config, "_attn_implementation", "?")
    lines = [f"# ChatLLM decoding: {llm.identity}", "",
             f"{n} prompts (open and short questions), greedy, max_new_tokens={max_new_tokens}, torch threads "
             f"{torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()}), OMP_WAIT_POLICY "
             f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, attention {attn_used}, "
             f"{platform.processor() or platform.machine()}, best of {repeats}; compute bound {bound:.0f} tok/s "
             f"({flops / 1e9:.2f} GFLOP a token at the measured fp32 matmul rate)", "",
             "One at a time (template, `generate` on one prompt, decode; the VoiceBench loop): " +
             (f"{single[0]:.1f} tok/s, {single[1]:.2f} items/s" if single else "not measured"), "",
             "| batch | bare tok/s | bare items/s | harness tok/s | harness items/s | harness ÷ bare | "
             "harness ÷ one at a time | harness ÷ bound | tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    best = {"bare": (0.0, 0), "harness": (0.0, 0)}
    exact, agree, harness_ids = dtype == "float32", [], {}  # (other dtypes: answers depend on the batch; counted, not required)
    for bs in batch_sizes:
        bare, harn = [], []
        for _ in range(repeats):  # alternate so that machine noise hits both alike
            bare.append(_bare(llm, ids_list, bs, cfg))
            harn.append(_harness(llm, prompts, bs, cfg))
        (b_s, b_out), (h_s, h_out) = min(bare, key=lambda x: x[0]), min(harn, key=lambda x: x[0])
        harness_ids[bs] = h_out
        for name, other in (("bare", b_out), ("one at a time", single[2] if single else h_out)):
            if exact and (where := same_tokens(h_out, other)) is not None:
                raise RuntimeError(f"batch {bs}: the harness and the {name} loop generated different tokens ({where})")
        ht = sum(map(len, h_out))
        br, hr = sum(map(len, b_out)) / b_s, ht / h_s
        agree.append(f"{agreement(h_out, b_out)[0]}/{n}")
        best["bare"], best["harness"] = max(best["bare"], (br, bs)), max(best["harness"], (hr, bs))
        vs_one = f"{hr / single[0]:.2f}" if single else "–"
        lines.append(f"| {bs} | {br:.1f} | {n / b_s:.2f} | {hr:.1f} | {n / h_s:.2f} | {hr / br:.2f} | "
                     f"{vs_one} | {hr / bound:.2f} | {ht} |")
        print(lines[-1], file=sys.stderr, flush=True)
    (hb, hbs), (bb, bbs) = best["harness"], best["bare"]
    lines += ["", f"Best: harness {hb:.1f} tok/s (batch {hbs}) against bare {bb:.1f} tok/s (batch {bbs}): "
              f"{hb / bb:.2f}×" + (f"; against one at a time {hb / single[0]:.2f}×." if single else ".") +
              (" Same token ids from every loop." if exact else
               f" {dtype}: answers identical to the bare loop's, by batch: {', '.join(agree)}; "
               f"{against_float32(spec, prompts, cfg, harness_ids, hbs)}.")]
    return "\n".join(lines) + "\n"


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[int, int | None]:
    """How many answers two loops generated with the same ids, and the median token at which the
    others first differ (None where none does)."""
    firsts = sorted(first_difference(x, y) for x, y in zip(a, b) if x != y)
    return len(a) - len(firsts), (firsts[len(firsts) // 2] if firsts else None)


def against_float32(spec, prompts, cfg: DecodeConfig, ids: dict, bs: int) -> str:
    """How far a lower-precision harness's answers (`ids[bs]`, at batch `bs`) are from the float32
    harness's (the tolerance README's Speed section states)."""
    llm = ChatLLM.load(spec or DEFAULT_LLM)
    same, where = agreement(ids[bs], llm.generate_ids([llm.prompt_ids(m) for m in prompts], cfg, rows=bs))
    return (f"against the float32 harness at batch {bs}: {same}/{len(prompts)} identical" +
            (f", the others first differ at token {where} (median)" if where is not None else ""))
