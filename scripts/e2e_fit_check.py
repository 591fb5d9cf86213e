"""Does an AudioChatLlama checkpoint carry the content of the speech to the LLM? On the rows of a
responses file (`data responses`), spoken in N fresh draws of a voice split, it reports:

- the loss of each row's own target, against the loss of targets shuffled among the rows (equal
  means the model ignores what was said);
- how often the greedy answer equals the target exactly (the frozen LLM's answer to the typed
  transcript) and its chrF.

    python scripts/e2e_fit_check.py CHECKPOINT RESPONSES [--voices train|dev|test] [--limit 32]

A recipe that cannot fit 32 rows (trained on them alone) cannot learn from thousands: run it on an
overfitting run's checkpoint first.
"""
from __future__ import annotations

import argparse

import sacrebleu
import torch

from bench.tts import Voice, synthesize
from bench.types import Request, Turn
from systems.audiochatllama.data import read_responses
from systems.audiochatllama.model import AudioChatLlama
from systems.llm import DecodeConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("responses")
    ap.add_argument("--voices", default="train", choices=("train", "dev", "test"))
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_responses(args.responses)[1][: args.limit]
    model = AudioChatLlama.load(args.checkpoint).eval()
    requests = [Request(Turn("user", audio=synthesize(r["transcript"], Voice.sample(args.voices, f"fit-{i}")),
                             transcript=r["transcript"]), (), r["instruction"]) for i, r in enumerate(rows)]
    targets = [r["ids"] for r in rows]
    shuffled = targets[1:] + targets[:1]  # every row gets another row's target
    with torch.inference_mode():
        own = sum(model.loss([q], [t]).item() for q, t in zip(requests, targets)) / len(rows)
        other = sum(model.loss([q], [t]).item() for q, t in zip(requests, shuffled)) / len(rows)
        cap = max(map(len, targets)) + 4
        out = model.llm.generate_embeds(model.request_embeds(requests), DecodeConfig(cap))
    tok = model.llm.tokenizer
    hyps = [tok.decode(ids, skip_special_tokens=True).strip() for ids in out]
    refs = [r["response"] for r in rows]
    exact = sum(h == r for h, r in zip(hyps, refs)) / len(rows)
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    print(f"{len(rows)} rows, {args.voices} voices: loss own targets {own:.3f}, shuffled {other:.3f}; "
          f"greedy = target {100 * exact:.0f} %, chrF {chrf:.1f}")
    for r, h in list(zip(rows, hyps))[:5]:
        print(f"  said: {r['transcript']}\n  want: {r['response'][:100]}\n  got:  {h[:100]}")


if __name__ == "__main__":
    main()
