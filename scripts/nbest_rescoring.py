"""Experiment: how much could the ASR gain from a stronger LM? On the dev sentences (the 60 in their
dev voices plus the same sentences in 3 more draws of dev voices: 240 utterances; never test), decode
the N best transcripts with the checkpoint's beam search + n-gram LM, report the 1-best WER, the
oracle WER of the N best, and the WER after adding `lam` x the embedded chat LLM's log-probability of
each transcript (as a user turn) to its score.

    python scripts/nbest_rescoring.py systems/checkpoints/ctc-conformer [--nbest 16]
"""
from __future__ import annotations

import argparse

import jiwer
import torch

from bench.tts import Voice, synthesize
from systems.asr.ctc import CTCASR
from systems.asr.lm import ctc_beam_search, ctc_pieces
from systems.asr.train import ASRTrainConfig, dev_set
from systems.llm import ChatLLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--nbest", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = dev_set(ASRTrainConfig())
    pairs = list(dev) + [(t, Voice.sample("dev", f"extra-{k}-{i}")) for k in range(3) for i, (t, _) in enumerate(dev)]
    refs = [t for t, _ in pairs]
    asr = CTCASR.from_pretrained(args.model)
    if asr.lm is None:
        raise SystemExit(f"{args.model} has no decoding.json + LM: run `audiochat-bench train lm --model {args.model} --tune`")
    logps = asr.log_probs([synthesize(t, v, cache=False) for t, v in pairs])
    pieces = ctc_pieces(asr.tokenizer)
    nbest = [ctc_beam_search(lp, pieces, asr.blank, asr.lm, asr.beam, nbest=args.nbest) for lp in logps]
    wer = lambda hyps: f"{100 * jiwer.wer(refs, [h or '<empty>' for h in hyps]):.2f} %"
    print(f"{len(refs)} dev utterances; 1-best {wer([n[0][0] for n in nbest])}; "
          f"oracle of {args.nbest} {wer([min(n, key=lambda h: jiwer.wer(r, h[0] or '<empty>'))[0] for r, n in zip(refs, nbest)])}")
    llm = ChatLLM.load()
    prefix = llm.embed(llm.tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    lls = [[-x.nll for x in llm.logprobs_embeds([(prefix, h or " ") for h, _ in n])] for n in nbest]
    for lam in (0.1, 0.2, 0.3, 0.5, 1.0):
        hyps = [max(zip(n, ll), key=lambda z: z[0][1] + lam * z[1])[0][0] for n, ll in zip(nbest, lls)]
        print(f"LLM rescoring, weight {lam}: {wer(hyps)}")


if __name__ == "__main__":
    main()
