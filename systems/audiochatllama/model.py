"""AudioChatLlama: encoder → bridge → frozen chat LLM, with one of two bridges.

    continuous (the paper's):
    audio (B, samples) ─encoder→ (B, T, C) ─stack k→ (B, T/k, k·C) ─projector→ (B, T/k, D)
    tokens (a CTC head over the LLM's own tokens, `bridge.py`):
    audio ─encoder→ (B, T, C) ─head→ (B, T, V′) ─collapse→ (T′, V′) ─× E_llm[V′]→ (T′, D)
                                                 + zero-initialised projector(states at T′) → (T′, D)

The projected audio embeddings sit in the chat template exactly where the user's text would be:
the conversation is rendered with a marker in each spoken turn, the text around the markers is
tokenised and embedded with the LLM's own token embeddings, and the audio embeddings are spliced
in. Typed turns stay text, so a conversation may mix spoken and typed turns in any order, and a
text-only conversation is exactly the frozen LLM's prompt.

Checkpoints hold only the trainable weights (projector; the encoder if it was tuned; LoRA if on)
plus the config needed to rebuild the rest.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from bench.types import Audio, Request, Turn
from systems.common import to_messages
from systems.llm import ChatLLM

MARK = "\x00AUDIO{}\x00"
MARK_RE = re.compile("\x00AUDIO(\\d+)\x00")


@dataclass
class ModelConfig:
    encoder: str = "ctc"  # "ctc" | "whisper" | "token-ctc" (a `train bridge` encoder with its token head)
    encoder_path: str = ""  # CTC checkpoint dir, "whisper-base", or a token-CTC encoder dir
    # "continuous": stacked frames through the projector; "tokens": the token head's posteriors over the
    # LLM's own embeddings at the collapsed CTC frames, plus the projector as a zero-initialised residual
    # (needs encoder "token-ctc")
    bridge: str = "continuous"
    llm: str = "smollm2"
    stack: int = 0  # frames per embedding; 0: as many as make ~80 ms (2 for a 40 ms CTC encoder, 4 for Whisper)
    projector_hidden: int = 1024
    train_encoder: bool = True
    lora_r: int = 0  # LoRA rank on the LLM (0: off; the ablation switch)
    lora_alpha: int = 16
    # RMS-normalise the projector's output, its gain starting at the scale of the LLM's token
    # embeddings (as Ultravox's projector ends), so audio rows cannot drift far from the norm of a
    # token embedding. An ablation switch, off by default (its A/B is in the audiochatllama-smollm2 card).
    out_norm: bool = False


def has_speech(request: Request) -> bool:
    return any(t.spoken for t in (*request.history, request.turn))


class Projector(nn.Module):
    """LayerNorm → Linear → GELU → Linear, then (with `out_scale`) an RMSNorm whose gain starts at
    `out_scale`, the per-element RMS of the LLM's token embeddings."""

    def __init__(self, d_in: int, hidden: int, d_out: int, out_scale: float | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
        self.norm = None
        if out_scale:
            self.norm = nn.RMSNorm(d_out, eps=1e-6)
            nn.init.constant_(self.norm.weight, out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)  # (B, T, D)
        return self.norm(x) if self.norm is not None else x


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) → (B, ⌈T/k⌉, k·C), zero-padding T to a multiple of k; lengths rounded up."""
    if k == 1:
        return x, lengths
    B, T, C = x.shape
    pad = (-T) % k
    x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(B, (T + pad) // k, k * C), (lengths + k - 1) // k


class AudioChatLlama(nn.Module):
    def __init__(self, cfg: ModelConfig, encoder: nn.Module, llm: ChatLLM):
        super().__init__()
        self.cfg, self.encoder, self.llm = cfg, encoder, llm
        self.lm = llm.model  # registered as a submodule so DDP and .to() see it
        for p in self.lm.parameters():
            p.requires_grad_(False)
        if cfg.lora_r:
            from peft import LoraConfig, get_peft_model

            if any("lora_" in n for n, _ in self.lm.named_parameters()):
                raise ValueError("this LLM already carries another model's LoRA adapters (peft adds them in "
                                 "place): give each LoRA checkpoint its own ChatLLM")

            self.lm = get_peft_model(self.lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                         target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
            self._set_lora(False)  # peft injects the adapters into the shared LLM's modules: off until asked
        for p in self.encoder.parameters():
            p.requires_grad_(cfg.train_encoder)
        tokens = llm.model.get_input_embeddings().weight  # (V, D)
        if cfg.bridge == "tokens":
            self._build_token_bridge(encoder, tokens)
        elif cfg.bridge == "continuous":
            if not cfg.stack:
                cfg.stack = max(1, round(80 / encoder.frame_ms))
            scale = float(tokens.detach().float().pow(2).mean().sqrt()) if cfg.out_norm else None
            self.projector = Projector(encoder.dim * cfg.stack, cfg.projector_hidden, tokens.shape[1], scale)
        else:
            raise ValueError(f"unknown bridge {cfg.bridge!r}: 'continuous' or 'tokens'")

    def _build_token_bridge(self, encoder: nn.Module, tokens: torch.Tensor) -> None:
        if not hasattr(encoder, "vocab"):
            raise ValueError("the token bridge needs a token-CTC encoder (encoder 'token-ctc', from `train bridge`)")
        self.cfg.stack = 1  # the CTC collapse already brings frames down to ~tokens
        self.projector = Projector(encoder.dim, self.cfg.projector_hidden, tokens.shape[1])
        nn.init.zeros_(self.projector.net[-1].weight)  # the residual starts at 0: step 0 reads pure tokens
        nn.init.zeros_(self.projector.net[-1].bias)
        # rows for the classes after blank: the fallback (the mean embedding), then the vocabulary's tokens;
        # derived from the frozen LLM, so not saved with the checkpoint
        table = tokens.detach()[torch.tensor(encoder.vocab.ids, device=tokens.device)]
        self.register_buffer("token_table", torch.cat([table.mean(0, keepdim=True), table]), persistent=False)

    # -- LoRA only where there is speech ---------------------------------------------------------
    @contextmanager
    def lora(self, on: bool = True):
        """LoRA adapters (if any) active inside this block only, and only with `on`. peft injects them
        into the LLM's modules in place, and whatever else calls that LLM must see it frozen: the KL
        teacher in training, and anything a caller shares the ChatLLM with (the harness gives a LoRA
        checkpoint its own). So they are off everywhere else, and a typed-only conversation gets exactly
        the frozen LLM's output even from a LoRA checkpoint (`on=False`)."""
        if not self.cfg.lora_r:
            yield
            return
        self._set_lora(on)
        try:
            yield
        finally:
            self._set_lora(False)

    def _set_lora(self, on: bool) -> None:
        grads = {p: p.requires_grad for n, p in self.lm.named_parameters() if "lora_" in n}
        tuner = self.lm.base_model  # peft's LoraModel
        tuner.enable_adapter_layers() if on else tuner.disable_adapter_layers()
        for p, g in grads.items():  # peft's switch also sets these; training decides them
            p.requires_grad_(g)

    # -- audio → embeddings ---------------------------------------------------------------------
    def audio_embeds(self, audios: Sequence[Audio], budget_seconds: float = 96.0) -> list[torch.Tensor]:
        """One (T_i, D) embedding sequence per clip. Outside training, clips that would pad to more than
        `budget_seconds` in one batch (long inputs: summarize's passages) go through the encoder in
        length-sorted groups of at most that much padded audio: each group pads little, and attention
        over a few similar clips costs far less than over one batch padded to the longest (24 passages:
        1.8x faster in groups of 4, results/profile_default.md)."""
        longest = max((a.seconds for a in audios), default=0.0)
        if self.training or torch.is_grad_enabled() or len(audios) * longest <= budget_seconds:
            return self._audio_embeds(audios)
        out: list = [None] * len(audios)
        order = sorted(range(len(audios)), key=lambda i: audios[i].seconds)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * audios[order[end]].seconds <= budget_seconds:
                end += 1
            for i, e in zip(order[start:end], self._audio_embeds([audios[i] for i in order[start:end]])):
                out[i] = e
            start = end
        return out

    def _audio_embeds(self, audios: Sequence[Audio]) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_encoder):
            states, lengths = self.encoder(audios)  # (B, T, C), (B,)
        if self.cfg.bridge == "tokens":
            return self._token_embeds(states, lengths)
        states, lengths = stack_frames(states, lengths, self.cfg.stack)  # (B, T/k, k·C)
        emb = self.projector(states)  # (B, T/k, D)
        return [emb[i, : int(lengths[i])] for i in range(len(audios))]

    def _token_embeds(self, states: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        from systems.audiochatllama.bridge import collapse

        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_encoder):
            post = self.encoder.head(states).float().softmax(-1)  # (B, T, V′)
        out = []
        for i in range(states.shape[0]):
            p, s = collapse(post[i, : int(lengths[i])], states[i, : int(lengths[i])])  # (T′, V′), (T′, C)
            words = p[:, 1:] / p[:, 1:].sum(-1, keepdim=True).clamp_min(1e-8)  # blank out, renormalised
            table = self.token_table
            out.append((words.to(table.dtype) @ table) + self.projector(s[None])[0].to(table.dtype))  # (T′, D)
        return out

    # -- prompts with audio slots --------------------------------------------------------------
    def prompt_embeds(self, request: Request, audio: dict[int, torch.Tensor]) -> torch.Tensor:
        """(T, D) embeddings of the chat prompt, spoken turns replaced by their audio embeddings
        (`audio` maps id(turn) → embeddings)."""
        slots: list[torch.Tensor] = []

        def view(t: Turn) -> str:
            if t.spoken:
                slots.append(audio[id(t)])
                return MARK.format(len(slots) - 1)
            return t.text

        msgs = to_messages(request, view)
        text = self.llm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        parts, out = MARK_RE.split(text), []
        for k, part in enumerate(parts):
            if k % 2:  # a marker's index
                out.append(slots[int(part)])
            elif part:
                ids = self.llm.tokenizer(part, add_special_tokens=False)["input_ids"]
                out.append(self.llm.embed(ids))
        return torch.cat(out, dim=0)

    def request_embeds(self, requests: Sequence[Request]) -> list[torch.Tensor]:
        """Prompt embeddings for a batch: every spoken turn's audio encoded in one batch."""
        turns = [t for r in requests for t in (*r.history, r.turn) if t.role == "user" and t.spoken]
        missing = [t for t in turns if not isinstance(t.audio, Audio)]
        if missing:
            raise ValueError("AudioChatLlama needs audio for every spoken turn")
        embs = self.audio_embeds([t.audio for t in turns]) if turns else []
        audio = {id(t): e for t, e in zip(turns, embs)}
        return [self.prompt_embeds(r, audio) for r in requests]

    # -- training ----------------------------------------------------------------------------
    def loss(self, requests: Sequence[Request], targets: Sequence[Sequence[int]],
             teacher_logits: Sequence[torch.Tensor | None] | None = None, kl_weight: float = 0.0) -> torch.Tensor:
        """Cross-entropy of the target response tokens given the (spoken) prompt; with
        `teacher_logits` (per sample, the text-prompted LLM's logits at the response positions, or None
        where the target is not the LLM's answer), plus `kl_weight` × KL(teacher ‖ student) on the full
        next-token distributions of the samples that have a teacher."""
        prompts = self.request_embeds(requests)
        seqs = [torch.cat([p, self.llm.embed(t)]) for p, t in zip(prompts, targets)]
        width = max(s.shape[0] for s in seqs)
        D = seqs[0].shape[1]
        x = torch.zeros(len(seqs), width, D, dtype=seqs[0].dtype, device=seqs[0].device)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=x.device)
        for i, s in enumerate(seqs):  # right padding
            x[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        base = self.llm.model  # the causal LM (LoRA layers, if any, are injected in place)
        with self.lora(any(map(has_speech, requests))):
            hidden = base.model(inputs_embeds=x, attention_mask=mask).last_hidden_state  # (B, W, D)
        # Logits only where a response token is predicted: the LM head over a 49k vocabulary at every
        # prompt position would cost a third of the forward pass for nothing.
        rows = [hidden[i, p.shape[0] - 1: p.shape[0] - 1 + len(t)] for i, (p, t) in enumerate(zip(prompts, targets))]
        logits = base.lm_head(torch.cat(rows)).float()  # (N, V)
        gold = torch.tensor([tok for t in targets for tok in t], device=x.device)
        ce = nn.functional.cross_entropy(logits, gold)
        if not kl_weight or not teacher_logits or all(t is None for t in teacher_logits):
            return ce
        keep = torch.tensor([t is not None for t, ids in zip(teacher_logits, targets) for _ in ids], device=x.device)
        student = torch.log_softmax(logits[keep], -1)  # (N', V): the positions that have a teacher
        teacher = torch.log_softmax(torch.cat([t for t in teacher_logits if t is not None]).float(), -1)
        return ce + kl_weight * nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")

    forward = loss  # so that DistributedDataParallel sees the training computation

    # -- checkpoints: trainable weights + config --------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable parameters, plus every buffer of a trained module (BatchNorm running statistics
        of a tuned encoder change in training too)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        prefixes = ("projector.",) + (("encoder.",) if self.cfg.train_encoder else ())
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if k in names or k.startswith(prefixes)}

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(path / "trainable.safetensors"))
        meta = {"model": asdict(self.cfg), "encoder_source": self.encoder.source, "llm_identity": self.llm.identity,
                **(extra or {})}
        (path / "config.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def build(cls, cfg: ModelConfig, llm: ChatLLM | None = None, encoder: nn.Module | None = None) -> "AudioChatLlama":
        from systems.audiochatllama.encoders import CTCEncoder, WhisperEncoder

        if encoder is None and cfg.encoder == "token-ctc":
            from systems.audiochatllama.bridge import TokenCTCEncoder

            encoder = TokenCTCEncoder.load(cfg.encoder_path)
        elif encoder is None:
            encoder = CTCEncoder.load(cfg.encoder_path) if cfg.encoder == "ctc" else WhisperEncoder.load(cfg.encoder_path or "whisper-base")
        return cls(cfg, encoder, llm or ChatLLM.load(cfg.llm))

    @classmethod
    def load(cls, path: str | Path, llm: ChatLLM | None = None, encoder: nn.Module | None = None,
             add_lora: int = 0) -> "AudioChatLlama":
        """`add_lora`: give a checkpoint trained without LoRA fresh adapters of this rank (which leave
        the outputs unchanged until trained), to continue training with them."""
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        cfg = ModelConfig(**meta["model"])
        fresh = bool(add_lora and not cfg.lora_r)
        if fresh:
            cfg.lora_r = add_lora
        model = cls.build(cfg, llm, encoder)
        state = load_file(str(path / "trainable.safetensors"))
        missing = {k for k in set(model.trainable_state()) - set(state) if not (fresh and "lora_" in k)}
        if missing:
            raise ValueError(f"{path}: checkpoint lacks trainable weights {sorted(missing)[:3]}...")
        model.load_state_dict(state, strict=False)
        return model.eval()
