"""The `audiochatllama` systems: batched generation from spliced audio embeddings, and scoring
(perplexity of a target response given the audio)."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.plugins import Context, takes
from bench.types import Generation, Request, System, TokenLogProbs
from systems.common import DecodeConfig, Lazy, decode_config, inference_mode, load_llm, shared_llm

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


class AudioChatLlamaSystem(System):
    name = "audiochatllama"

    def __init__(self, model, cfg: DecodeConfig = DecodeConfig(), identity: str = "unsaved", llm=None):
        self.model, self.cfg, self.identity = model, cfg, identity
        self.llm = llm or model.llm  # (its identity; generation uses the model's own, which may be a copy)
        torch = sys.modules.get("torch")  # (a model that is a torch module has torch imported)
        if torch is not None and isinstance(model, torch.nn.Module):  # (a Lazy one: in eval mode when it loads)
            model.eval()

    def fingerprint(self) -> str:
        # the checkpoint identity hashes its trainable weights and config (which names the encoder
        # it was trained on); the LLM identity covers the frozen part
        blob = json.dumps({"class": "AudioChatLlama/1", "checkpoint": self.identity, "llm": self.llm.identity,
                           **self.cfg.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _lora_split(self, requests: Sequence[Request], run) -> list:
        """`run(indices)`: the outputs for those requests. With a LoRA checkpoint, the typed-only requests
        go in one sub-batch with the adapters off (exactly the frozen LLM), those with speech in another
        with them on."""
        from systems.audiochatllama.model import has_speech

        if not self.model.cfg.lora_r:
            return run(range(len(requests)))
        out: list = [None] * len(requests)
        for on in (False, True):
            idx = [i for i, r in enumerate(requests) if has_speech(r) == on]
            if idx:
                with self.model.lora(on):
                    for i, o in zip(idx, run(idx)):
                        out[i] = o
        return out

    @inference_mode
    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        return self._lora_split(requests, lambda idx: self._generate([requests[i] for i in idx]))

    def _generate(self, requests: Sequence[Request]) -> list[Generation]:
        t0 = time.perf_counter()
        embeds = self.model.request_embeds(requests)
        t1 = time.perf_counter()
        new = self.model.llm.generate_embeds(embeds, self.cfg)
        t2 = time.perf_counter()
        n = max(len(requests), 1)
        tok = self.model.llm.tokenizer
        return [Generation(text=tok.decode(ids, skip_special_tokens=True).strip(), tokens=len(ids),
                           seconds={"encoder": (t1 - t0) / n, "llm": (t2 - t1) / n}) for ids in new]

    @inference_mode
    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        def score(idx):
            embeds = self.model.request_embeds([pairs[i][0] for i in idx])
            return self.model.llm.logprobs_embeds([(e, pairs[i][1]) for e, i in zip(embeds, idx)])

        return self._lora_split([r for r, _ in pairs], score)


CHECKPOINT_ARG = "AudioChatLlama checkpoint directory (from `train e2e ... --export DIR`)"


def _load(ctx: Context, default: Path) -> AudioChatLlamaSystem:
    from bench.assets import weights_identity

    path = Path(ctx.args.get("checkpoint") or default)
    if not (path / "trainable.safetensors").exists():
        raise FileNotFoundError(f"no AudioChatLlama checkpoint at {path}. Train one with `audiochat-bench train e2e` "
                                f"or pass --system-args SYSTEM:checkpoint=PATH")
    meta = json.loads((path / "config.json").read_text())
    llm = shared_llm(ctx)
    if ctx.options.get("llm") and meta["model"]["llm"] != ctx.options["llm"]:
        raise ValueError(f"{path} was trained for the LLM {meta['model']['llm']!r}, not {ctx.options['llm']!r}")
    identity = f"{path.name}@{weights_identity(path)}"
    # peft puts LoRA adapters into the LLM's modules in place: a LoRA checkpoint gets its own copy of the
    # LLM (loaded with it, on first use), so that two of them in one run cannot overwrite each other's adapters
    own = bool(meta["model"].get("lora_r"))
    model = ctx.shared(f"e2e:{path}", lambda: Lazy(identity, lambda: _e2e_load(path, load_llm(ctx) if own else llm)))
    return AudioChatLlamaSystem(model, decode_config(ctx), identity, llm)


def _e2e_load(path: Path, llm):
    from systems.audiochatllama.model import AudioChatLlama

    return AudioChatLlama.load(path, llm=llm).eval()


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-smollm2)")
def build(ctx: Context) -> AudioChatLlamaSystem:
    return _load(ctx, CHECKPOINTS / "audiochatllama-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-whisper-smollm2)")
def build_whisper(ctx: Context) -> AudioChatLlamaSystem:
    return _load(ctx, CHECKPOINTS / "audiochatllama-whisper-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-lora-smollm2)")
def build_lora(ctx: Context) -> AudioChatLlamaSystem:
    """The LoRA ablation: the same recipe with adapters on the LLM, active only on requests with speech."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-lora-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-tokens-smollm2)")
def build_tokens(ctx: Context) -> AudioChatLlamaSystem:
    """The token bridge: the encoder's CTC posteriors over the LLM's own tokens, weighting the LLM's
    input embeddings, plus a learned residual (`bridge.py`)."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-tokens-smollm2")
