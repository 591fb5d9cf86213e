"""How much does the frozen LLM's answer depend on the exact form of the typed question? On the
built-in spoken-QA test questions, the text topline's answer is compared with its answers to the same
question in other forms, each a thing a speech front end might hand it:

- `asr-ideal`: lowercased, punctuation removed (what a perfect ASR transcript looks like);
- `repeat2`: every token embedding given twice (a frame-rate sequence that holds the words);
- `blank1`: a zero embedding after every token (a frame-rate sequence with gaps);
- `chars`: the question spelled as one token per character.

For each: agreement with the topline (exact match after SQuAD normalisation, chrF) and gold accuracy.
It bounds what agreement a system that hears the words, but not the typography, can reach.

    python scripts/topline_sensitivity.py [--llm smollm2] [--limit 100] [--threads 1]
"""
from __future__ import annotations

import argparse
import re

import torch

from systems.llm import ChatLLM, DecodeConfig
from tasks.builtin import SpokenQA
from tasks.metrics import best_over, contains_answer, corpus_chrf, exact_match

MODES = ("typed", "asr-ideal", "repeat2", "blank1", "chars")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="smollm2", help="an embedded LLM name, a model id or a local path")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = SpokenQA(split="test").source()[: args.limit]  # the task's own test questions and gold answers
    llm = ChatLLM.load(args.llm)
    tok, emb = llm.tokenizer, llm.model.get_input_embeddings().weight.detach()
    template = tok.apply_chat_template([{"role": "system", "content": SpokenQA.instruction},
                                        {"role": "user", "content": "\x00"}], tokenize=False, add_generation_prompt=True)
    pre, post = (emb[tok(part, add_special_tokens=False)["input_ids"]] for part in template.split("\x00"))

    def user_part(q: str, mode: str) -> torch.Tensor:
        if mode == "chars":
            return emb[[tok.convert_tokens_to_ids("Ġ" if c == " " else c) for c in q]]  # byte-level BPE: Ġ is a space
        if mode == "asr-ideal":
            q = re.sub(r"[^\w\s']", "", q.lower())
        x = emb[tok(q, add_special_tokens=False)["input_ids"]]  # (T, D)
        if mode == "repeat2":
            return x.repeat_interleave(2, 0)
        if mode == "blank1":
            return torch.stack([x, torch.zeros_like(x)], 1).reshape(-1, x.shape[1])
        return x

    answers = {}
    cfg = DecodeConfig(args.max_new_tokens)
    for mode in MODES:
        embeds = [torch.cat([pre, user_part(r["question"], mode), post]) for r in rows]
        answers[mode] = [tok.decode(ids, skip_special_tokens=True).strip()
                         for i in range(0, len(embeds), 16) for ids in llm.generate_embeds(embeds[i:i + 16], cfg)]
    top = answers["typed"]
    print(f"| form of the question (n={len(rows)}) | agreement EM | agreement chrF | gold accuracy |")
    print("|---|---|---|---|")
    for mode in MODES:
        a = answers[mode]
        em = sum(exact_match(x, y) for x, y in zip(a, top)) / len(rows)
        acc = sum(best_over(contains_answer, x, r["answers"]) for x, r in zip(a, rows)) / len(rows)
        print(f"| {mode} | {100 * em:.0f} % | {corpus_chrf(a, top):.1f} | {100 * acc:.0f} % |")


if __name__ == "__main__":
    main()
