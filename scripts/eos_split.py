"""How much of an AudioChatLlama checkpoint's `response-ppl` ratio comes from the end-of-turn token: the
corpus PPL ratio of the topline's answers (the response-ppl targets of a run) with and without that final
token, and its mean log-prob, per checkpoint.

    python scripts/eos_split.py RUN_DIR/outputs.jsonl CHECKPOINT_DIR [CHECKPOINT_DIR ...]

RUN_DIR: a `run` that has the text topline on `response-ppl` (its items are the ones scored here).
Each checkpoint gets its own LLM (LoRA adapters are added to the LLM's modules in place).
"""
import json
import math
import sys

from bench.types import Request, Turn
from systems.audiochatllama.model import AudioChatLlama
from systems.audiochatllama.system import AudioChatLlamaSystem
from systems.common import to_messages
from systems.llm import ChatLLM, DecodeConfig
from tasks.builtin import ResponsePPL


def ppl(lps, drop_last: bool) -> float:
    nll = sum(-sum(l.logprobs[:-1] if drop_last else l.logprobs) for l in lps)
    return math.exp(nll / sum(len(l.logprobs) - drop_last for l in lps))


def eos_logprob(lps) -> float:
    return sum(l.logprobs[-1] for l in lps) / len(lps)


def main(outputs: str, *checkpoints: str, batch: int = 8) -> None:
    rows = [json.loads(l) for l in open(outputs)]
    target = {r["item_id"]: r["text"] for r in rows if r["task"] == "response-ppl" and r["system"] == "text"}
    items = [it for it in ResponsePPL(split="test").items() if it.id in target]
    typed = [(to_messages(Request(Turn("user", text=it.turn.transcript), (), it.instruction), lambda t: t.text),
              target[it.id]) for it in items]
    spoken = [(Request(Turn("user", audio=it.turn.audio.load(), transcript=it.turn.transcript), (), it.instruction),
               target[it.id]) for it in items]
    llm = ChatLLM.load("smollm2")
    top = [lp for i in range(0, len(typed), batch) for lp in llm.logprobs_batch(typed[i:i + batch])]
    print(f"{len(items)} items; topline PPL {ppl(top, False):.3f}, without end-of-turn {ppl(top, True):.3f}, "
          f"end-of-turn log-prob {eos_logprob(top):.3f}")
    for path in checkpoints:
        model = AudioChatLlama.load(path, llm=ChatLLM.load("smollm2"))
        system = AudioChatLlamaSystem(model, DecodeConfig(), llm=model.llm)
        lps = [lp for i in range(0, len(spoken), batch) for lp in system.score_batch(spoken[i:i + batch])]
        print(f"{path}: PPL ratio {ppl(lps, False) / ppl(top, False):.3f}, without end-of-turn "
              f"{ppl(lps, True) / ppl(top, True):.3f}, end-of-turn log-prob {eos_logprob(lps):.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
