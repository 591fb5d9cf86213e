"""A tiny AudioChatLlama (tiny CTC encoder, tiny Llama) for tests; also the torchrun entry point of
the 2-process DDP test: `torchrun --nproc-per-node 2 tests/e2e_tiny.py OUT_DIR`."""
from __future__ import annotations

import hashlib
import sys

import torch

ROWS = [{"transcript": t, "instruction": None, "ids": ids} for t, ids in (
    ("the cat sat on the mat", [40, 41, 42, 43]), ("a dog ran in the park", [50, 51, 52]),
    ("what is the capital of france", [60, 61, 62, 63, 64]), ("we walked to the river", [70, 71]))]


def tiny_model(seed: int = 0, stack: int = 0, out_norm: bool = False):
    from systems.asr.ctc import CTCASR, train_tokenizer
    from systems.audiochatllama.encoders import CTCEncoder
    from systems.audiochatllama.model import AudioChatLlama, ModelConfig
    from tests.fakes import tiny_llm

    torch.manual_seed(seed)
    tok = train_tokenizer([r["transcript"] for r in ROWS] * 5, 64)
    asr = CTCASR.build(tok, hidden=32, layers=1, heads=2, ffn=64, kernel=7, subsampling=4, dropout=0.0)
    cfg = ModelConfig(encoder="ctc", stack=stack, projector_hidden=32, train_encoder=True, out_norm=out_norm)
    return AudioChatLlama(cfg, CTCEncoder(asr), tiny_llm(seed))


def main(out: str) -> None:
    import os

    from systems.audiochatllama.train import E2ETrainConfig, train

    cfg = E2ETrainConfig(batch_size=2, steps=3, warmup=1, log_every=1, ckpt_every=100, noise_prob=0.0, threads=1)
    model = tiny_model()
    train(cfg, __import__("pathlib").Path(out), model=model, rows=ROWS)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.projector.parameters())).hexdigest()
    with open(f"{out}/rank{os.environ.get('RANK', '0')}.sha", "w") as f:
        f.write(digest)


if __name__ == "__main__":
    main(sys.argv[1])
