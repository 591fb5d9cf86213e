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
from systems.common import DecodeConfig, Lazy, decode_config, inference_mode, llm_prompt_counter
from systems.run_llm import load_llm, shared_llm

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


class AudioChatLlamaSystem(System):
    name = "audiochatllama"

    def __init__(self, model, cfg: DecodeConfig = DecodeConfig(), identity: str = "unsaved", llm=None, remote=None):
        self.model, self.cfg, self.identity = model, cfg, identity
        self.llm = llm or model.llm  # (its identity; generation uses the model's own, which may be a copy)
        self.remote = remote  # an OpenAIEndpoint whose server decodes from prompt embeddings (`server=`)
        torch = sys.modules.get("torch")  # (a model that is a torch module has torch imported)
        if torch is not None and isinstance(model, torch.nn.Module):  # (a Lazy one: in eval mode when it loads)
            model.eval()

    def fingerprint(self) -> str:
        # the checkpoint identity hashes its trainable weights and config (which names the encoder
        # it was trained on); the LLM identity covers the frozen part
        served = {"served": self.remote.fingerprint()} if self.remote is not None else {}
        blob = json.dumps({"class": "AudioChatLlama/1", "checkpoint": self.identity, "llm": self.llm.identity,
                           **self.cfg.as_dict(), **served}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def prompt_counter(self):
        return llm_prompt_counter(self.llm, 12.5)  # a spoken turn: one embedding per ~80 ms of audio

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
        cfgs = [self.cfg.for_request(r) for r in requests]
        if self.remote is not None:  # the frozen LLM's decode on the server, from these embeddings
            answers = [(g.text.strip(), g.tokens) for g in self.remote.complete_embeds(embeds, cfgs)]
        else:
            answers = self.model.llm.answers(self.model.llm.generate_embeds(embeds, cfgs), cfgs)
        t2 = time.perf_counter()
        n = max(len(requests), 1)
        return [Generation(text=text, tokens=k, seconds={"encoder": (t1 - t0) / n, "llm": (t2 - t1) / n})
                for text, k in answers]

    @inference_mode
    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        def score(idx):
            embeds = self.model.request_embeds([pairs[i][0] for i in idx])
            return self.model.llm.logprobs_embeds([(e, pairs[i][1]) for e, i in zip(embeds, idx)])

        return self._lora_split([r for r, _ in pairs], score)


CHECKPOINT_ARG = "AudioChatLlama checkpoint directory (from `train e2e ... --export DIR`)"
SERVED_ARGS = {  # the frozen LLM's decoding on a server (vLLM --enable-prompt-embeds, or `serve --system text`)
    "server": "base URL (up to /v1) of a server that decodes the frozen LLM from prompt embeddings "
              "(POST /completions with prompt_embeds); encoder and bridge run here, generation there",
    "served_model": "the model name that server serves (default: the run's LLM id)",
    "concurrency": "requests in flight at once to `server` (default 8)",
}


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
    return AudioChatLlamaSystem(model, decode_config(ctx), identity, llm, _remote(ctx, meta, own))


def _remote(ctx: Context, meta: dict, lora: bool):
    """The `server=` endpoint, or None."""
    if not ctx.args.get("server"):
        return None
    if lora:
        raise ValueError("a LoRA checkpoint changes the LLM, so a server of the frozen LLM cannot decode for it")
    from systems.endpoint import OpenAIEndpoint

    try:
        concurrency = int(ctx.args.get("concurrency", 8))
    except ValueError:
        raise ValueError(f"concurrency={ctx.args['concurrency']!r} is not a number") from None
    return OpenAIEndpoint(ctx.args.get("served_model") or ctx.options.get("llm") or meta["model"]["llm"],
                          ctx.args["server"], decode_config(ctx).max_new_tokens, concurrency=concurrency)


def _e2e_load(path: Path, llm):
    from systems.audiochatllama.model import AudioChatLlama

    return AudioChatLlama.load(path, llm=llm).eval()


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-tokens-smollm2)", **SERVED_ARGS)
def build(ctx: Context) -> AudioChatLlamaSystem:
    """The default: the token bridge (the encoder's CTC posteriors over the LLM's own tokens weighting the
    LLM's input embeddings, plus a learned residual; `bridge.py`). It replaced the continuous projector
    when it was better by the paired intervals (see its card)."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-tokens-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-smollm2)", **SERVED_ARGS)
def build_continuous(ctx: Context) -> AudioChatLlamaSystem:
    """The paper's continuous projector (frame stacking + MLP, learned from scratch through the frozen
    LLM): the ablation row."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-whisper-tokens-smollm2)", **SERVED_ARGS)
def build_whisper(ctx: Context) -> AudioChatLlamaSystem:
    """The token bridge on Whisper's frozen encoder (which has heard real speech): the end-to-end system for
    real recordings. It replaced the continuous projector on the same encoder by the paired intervals (its card)."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-whisper-tokens-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-whisper-smollm2)", **SERVED_ARGS)
def build_whisper_continuous(ctx: Context) -> AudioChatLlamaSystem:
    """The paper's continuous projector on Whisper's frozen encoder: the ablation row."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-whisper-smollm2")


@takes(checkpoint=CHECKPOINT_ARG + " (default: the embedded audiochatllama-lora-smollm2)")
def build_lora(ctx: Context) -> AudioChatLlamaSystem:
    """The LoRA ablation: the same recipe with adapters on the LLM, active only on requests with speech."""
    return _load(ctx, CHECKPOINTS / "audiochatllama-lora-smollm2")


