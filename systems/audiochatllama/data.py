"""Modal-invariance targets: the frozen LLM's greedy response to every training transcript, typed.

    audiochat-bench data responses [--out FILE] [--limit N] [--max-new-tokens 48]

This is the only supervision AudioChatLlama gets. One JSON line per transcript: the transcript, the
instruction it was asked under (questions get the short-answer instruction; other sentences none),
the response text and its token ids (so training uses exactly the tokens the LLM produced), and
whether the length cap cut it. Empty and degenerate (looping) responses are dropped. Appends as it
goes and skips transcripts already done, so it can be stopped and resumed; the first line records
the LLM and the generation config, and a different LLM or config refuses to append.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corpus import QA_INSTRUCTION as QUESTION_INSTRUCTION  # the spoken-QA task's: trained as it is asked


def transcripts() -> list[str]:
    """Training transcripts, questions first (they matter most for spoken QA): the authored QA train
    questions, then the ASR training corpus (LLM-written sentences, authored sentences, stdlib prose)."""
    from corpus import split_rows, suite_texts
    from systems.asr.train import ASRTrainConfig, corpus

    qa = [r["question"] for r in split_rows("spoken_qa", "train")]
    held = set(suite_texts("dev")) | set(suite_texts("test"))
    return list(dict.fromkeys(qa + [s for s in corpus(ASRTrainConfig()) if s not in held]))


def instruction_for(text: str) -> str | None:
    words = text.lower().split()
    is_q = text.rstrip().endswith("?") or (words and words[0] in (
        "what", "who", "where", "when", "why", "how", "which", "is", "are", "do", "does", "can", "could"))
    return QUESTION_INSTRUCTION if is_q else None


def degenerate(ids: list[int]) -> bool:
    """Empty, or a loop: some 4-gram of tokens occurs three or more times."""
    if len(ids) < 2:
        return True
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    return any(grams.count(g) >= 3 for g in set(grams))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="audiochat-bench data responses", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/train/responses-smollm2.jsonl")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--limit", type=int, default=None, help="at most N transcripts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device for the LLM (e.g. cuda)")
    args = ap.parse_args(argv)
    import torch
    from tqdm import tqdm

    from systems.llm import DEFAULT_LLM, ChatLLM, DecodeConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    llm = ChatLLM.load(args.llm or DEFAULT_LLM, device=args.device)
    cfg = DecodeConfig(args.max_new_tokens)
    header = {"llm": llm.identity, "generation": cfg.as_dict(), "question_instruction": QUESTION_INSTRUCTION}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    if out.exists() and out.stat().st_size:
        lines = out.read_text().splitlines()
        if json.loads(lines[0]) != header:
            raise SystemExit(f"{out} was made with {lines[0]}, not {header}: use another --out")
        done = {json.loads(l)["transcript"] for l in lines[1:] if l.strip()}
    else:
        out.write_text(json.dumps(header) + "\n")
    todo = [t for t in transcripts()[: args.limit] if t not in done]
    kept = dropped = 0
    bar = tqdm(total=len(todo), desc="responses", unit="transcript", file=sys.stderr)
    for i in range(0, len(todo), args.batch_size):
        batch = todo[i:i + args.batch_size]
        msgs = [([{"role": "system", "content": ins}] if (ins := instruction_for(t)) else [])
                + [{"role": "user", "content": t}] for t in batch]
        ids = llm.generate_ids([llm.prompt_ids(m) for m in msgs], cfg)
        with open(out, "a") as f:
            for t, seq in zip(batch, ids):
                if degenerate(seq):
                    dropped += 1
                    seq = []  # recorded, so a resumed run does not retry it
                else:
                    kept += 1
                f.write(json.dumps({"transcript": t, "instruction": instruction_for(t),
                                    "response": llm.tokenizer.decode(seq, skip_special_tokens=True).strip(),
                                    "ids": seq, "capped": len(seq) >= args.max_new_tokens}) + "\n")
        bar.update(len(batch))
        bar.set_postfix(kept=kept, dropped=dropped)
    print(out)
    return 0


def read_responses(path: str | Path) -> tuple[dict, list[dict]]:
    """(header, usable rows) of a responses file."""
    lines = Path(path).read_text().splitlines()
    rows = [json.loads(l) for l in lines[1:] if l.strip()]
    return json.loads(lines[0]), [r for r in rows if r["ids"]]


if __name__ == "__main__":
    raise SystemExit(main())
