"""The token bridge: a CTC head over the LLM's own token vocabulary on the audio encoder.

    audio ─encoder→ (B, T, C) ─head→ (B, T, V′) posteriors over [blank, fallback, LLM tokens of the
    training text] ─drop blank frames, merge repeats→ (T′, V′) per clip ─× E_llm[V′]→ (T′, D)

At each kept frame the frozen LLM reads the posterior-weighted sum of its own input embeddings
(in-distribution from the first step of end-to-end training), and the model adds a zero-initialised
projection of the encoder state there (what the tokens miss: `model.py`). The head is trained first
like an ASR, with no LLM in the loop (`train bridge`, `train_bridge.py`); modal-invariance training
then tunes the whole path. The same posteriors decoded greedily are a cascade's transcript
(`TokenCTCASR`), which separates "a better acoustic model" from "end-to-end".

LegoSLM (Ma et al. 2025, arXiv 2505.11352) and the CTC compression of Speech-LLaMA (arXiv 2307.03917)
are the designs this follows.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from bench.types import Audio

BLANK, FALLBACK = 0, 1  # classes 2.. are LLM tokens


def speech_ids(tokenizer, text: str) -> list[int]:
    """The LLM tokens of a transcript as speech gives it: every word with its leading space, so a
    word has one spelling wherever it stands in the sentence."""
    return tokenizer(" " + " ".join(text.split()), add_special_tokens=False)["input_ids"]


class TokenVocab:
    """The head's classes: blank, a fallback for LLM tokens the training text lacks, then the LLM
    token ids of the training text (sorted).

    With `spell` (`from_texts(..., min_count=N)`, N > 1) the vocabulary keeps only the tokens the
    training text has at least N times, plus every one-character token of its alphabet (with and
    without the leading space), and a token outside it is spelled with the longest vocabulary pieces
    of its text (`ClassTokenizer`): every class then has examples to learn from, and a word the
    training text never had is still written out, where without spelling its tokens fall back."""

    def __init__(self, ids: Iterable[int], spell: bool = False):
        self.ids = sorted(set(int(i) for i in ids))
        self.index = {t: k + 2 for k, t in enumerate(self.ids)}
        self.spell = spell

    def __len__(self) -> int:
        return len(self.ids) + 2

    @classmethod
    def from_texts(cls, tokenizer, texts: Iterable[str], min_count: int = 1) -> "TokenVocab":
        counts = Counter(t for s in texts for t in speech_ids(tokenizer, s))
        if min_count <= 1:
            return cls(counts)
        chars = {c for t in counts for c in tokenizer.convert_ids_to_tokens(t)}  # the space among them
        singles = {tokenizer.convert_tokens_to_ids(p) for c in chars for p in (c, SPACE + c)
                   if p in tokenizer.get_vocab()}
        return cls({t for t, n in counts.items() if n >= min_count} | singles, spell=True)

    def encode(self, llm_ids: Sequence[int]) -> list[int]:
        return [self.index.get(t, FALLBACK) for t in llm_ids]

    def decode(self, classes: Sequence[int]) -> list[int]:
        """LLM token ids of the token classes (blank and fallback dropped)."""
        return [self.ids[c - 2] for c in classes if c >= 2]


SPACE = "\u0120"  # how byte-level BPE tokenizers (GPT-2's, SmolLM2's) write a leading space in a token


class ClassTokenizer:
    """A transcript → head classes, in the tokenizer interface the ASR recipe's speech stream uses."""

    def __init__(self, tokenizer, vocab: TokenVocab):
        self.tokenizer, self.vocab, self.pad_token_id = tokenizer, vocab, BLANK
        self.pieces = {tokenizer.convert_ids_to_tokens(t): c for t, c in vocab.index.items()} if vocab.spell else {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        out = []
        for t, c in zip(ids := speech_ids(self.tokenizer, text), self.vocab.encode(ids)):
            out += self._spelled(self.tokenizer.convert_ids_to_tokens(t)) if c == FALLBACK and self.pieces else [c]
        return {"input_ids": out}

    def _spelled(self, token: str) -> list[int]:
        """A token's text as the longest vocabulary pieces, left to right (a character no piece has
        falls back)."""
        out, i = [], 0
        while i < len(token):
            j = next((j for j in range(len(token), i, -1) if token[i:j] in self.pieces), None)
            out.append(FALLBACK if j is None else self.pieces[token[i:j]])
            i = i + 1 if j is None else j
        return out


def segments(best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CTC collapse as frame indices: for a (T,) best-class sequence, (segment id of each kept
    frame (T_kept,), the kept frames' mask (T,)); a segment is a run of one non-blank class."""
    keep = best != BLANK
    start = keep.clone()
    start[1:] &= best[1:] != best[:-1]
    return torch.cumsum(start.long(), 0)[keep] - 1, keep


def collapse(post: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, V′) posteriors and (T, C) states of one clip → their means over each CTC segment,
    (T′, V′) and (T′, C). A clip whose every frame is blank keeps its least-blank frame, so the LLM
    is never handed an empty spoken turn."""
    seg, keep = segments(post.argmax(-1))
    if not keep.any():
        i = int(post[:, BLANK].argmin())
        return post[i:i + 1], states[i:i + 1]
    n = int(seg.max()) + 1
    count = torch.zeros(n, 1, dtype=post.dtype, device=post.device).index_add_(
        0, seg, torch.ones(seg.numel(), 1, dtype=post.dtype, device=post.device))
    p = torch.zeros(n, post.shape[1], dtype=post.dtype, device=post.device).index_add_(0, seg, post[keep])
    s = torch.zeros(n, states.shape[1], dtype=states.dtype, device=states.device).index_add_(0, seg, states[keep])
    return p / count, s / count.to(states.dtype)


class TokenCTCEncoder(nn.Module):
    """The Conformer encoder (`ParakeetEncoder`) with a CTC head over LLM tokens. Same contract as
    `encoders.CTCEncoder` (audio → (B, T, C) states, lengths), plus `head` and `vocab`.

    A directory holds `model.safetensors` (encoder + head), `bridge.json` (encoder config, the
    vocabulary's LLM token ids, the LLM and encoder it was made from) and the feature extractor's
    `preprocessor_config.json`."""

    def __init__(self, encoder: nn.Module, fe, vocab: TokenVocab, meta: dict, source: str = "unsaved"):
        super().__init__()
        self.encoder, self.fe = encoder, fe
        self._heads(vocab, meta, source, encoder.config.hidden_size, 10 * encoder.config.subsampling_factor)

    def _heads(self, vocab: TokenVocab, meta: dict, source: str, dim: int, frame_ms: int) -> None:
        """The adapter (if any) and the token head on `dim`-wide states of `frame_ms` frames."""
        self.vocab, self.meta, self.source, self.dim, self.frame_ms = vocab, meta, source, dim, frame_ms
        # Transformer layers between the (character-trained) encoder and the token head: a frame must
        # know its whole word to emit a word-sized token, where the encoder was trained to know a character
        n = int(meta.get("adapter_layers", 0))
        self.adapter = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, next(h for h in (max(1, dim // 48), 4, 1) if dim % h == 0), 4 * dim,
                                       dropout=0.1, batch_first=True, norm_first=True),
            n, enable_nested_tensor=False) if n else None
        self.head = nn.Linear(dim, len(vocab))  # (B, T, C) → (B, T, V′)

    @classmethod
    def from_ctc(cls, ctc_dir: str | Path, tokenizer, texts: Iterable[str], llm: str,
                 adapter_layers: int = 0, min_count: int = 1) -> "TokenCTCEncoder":
        """A fresh head (and adapter) on the encoder of a trained character CTC model."""
        from systems.asr.ctc import CTCASR

        asr = CTCASR.from_pretrained(ctc_dir, decoder="greedy")
        vocab = TokenVocab.from_texts(tokenizer, texts, min_count)
        return cls(asr.model.encoder, asr.fe, vocab, {"llm": llm, "init_encoder": asr.identity,
                                                      "adapter_layers": adapter_layers})

    def forward(self, audios: Sequence[Audio]) -> tuple[torch.Tensor, torch.Tensor]:
        from systems.asr.ctc import featurize

        dev = self.head.weight.device
        with torch.autocast(dev.type, enabled=False):  # features in float32
            feats, mask = featurize(self.fe, [a.samples for a in audios], dev)
        return self.encode(feats, mask)

    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(input_features=feats, attention_mask=mask, output_attention_mask=True)
        return self.adapt(out.last_hidden_state, out.attention_mask.sum(-1))

    @torch.inference_mode()
    def base_states(self, wavs: Sequence) -> list[torch.Tensor]:
        """The states the adapter reads, (T_i, C) per clip of float32 16 kHz samples, without the
        adapter: what the cached route of `train bridge` computes once."""
        from systems.asr.ctc import featurize

        feats, mask = featurize(self.fe, list(wavs), self.head.weight.device)
        out = self.encoder(input_features=feats, attention_mask=mask, output_attention_mask=True)
        return [s[:n] for s, n in zip(out.last_hidden_state, out.attention_mask.sum(-1).tolist())]

    def base_parameters(self) -> list[nn.Parameter]:
        """The encoder's own parameters (what `--no-cached` tunes besides adapter and head)."""
        return list(self.encoder.parameters())

    def adapt(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, T, C) through the adapter (if any): the states the head and the bridge read."""
        if self.adapter is not None:
            pad = torch.arange(states.shape[1], device=states.device)[None] >= lengths.to(states.device)[:, None]
            states = self.adapter(states, src_key_padding_mask=pad)
        return states, lengths  # (B, T, C), (B,)

    def ctc_loss_states(self, states: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CTC loss of padded class labels (BLANK-padded) given the adapted states."""
        logp = torch.log_softmax(self.head(states).float(), -1).transpose(0, 1)  # (T, B, V′)
        target_lengths = (labels != BLANK).sum(-1)
        return nn.functional.ctc_loss(logp, labels, lengths, target_lengths, blank=BLANK, zero_infinity=True)

    def ctc_loss(self, feats: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CTC loss of padded class labels (BLANK-padded) given features (the ASR recipe's batches)."""
        return self.ctc_loss_states(*self.encode(feats, mask), labels)

    @torch.inference_mode()
    def transcribe_ids(self, audios: Sequence[Audio], batch_size: int = 16) -> list[list[int]]:
        """Greedy CTC: per clip, the LLM token ids of its best class per frame, collapsed."""
        from systems.asr.ctc import ctc_collapse

        was = self.training
        self.eval()
        order = sorted(range(len(audios)), key=lambda i: audios[i].samples.size)
        out: list[list[int]] = [[] for _ in audios]
        try:
            for k in range(0, len(order), batch_size):
                idx = order[k:k + batch_size]
                states, lengths = self([audios[i] for i in idx])
                best = self.head(states).argmax(-1)
                for row, i in enumerate(idx):
                    out[i] = self.vocab.decode(ctc_collapse(best[row, : int(lengths[row])].tolist(), BLANK))
        finally:
            self.train(was)
        return out

    # -- directories ---------------------------------------------------------------------------
    def save(self, path: str | Path, half: bool = False) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        own = {"encoder_config": self.encoder.config.to_dict()} if self.encoder is not None else {}  # (not Whisper's)
        (path / "bridge.json").write_text(json.dumps({**own, "vocab": self.vocab.ids,
                                                          **({"spell": True} if self.vocab.spell else {}), **self.meta}, indent=1))
        if self.fe is not None:
            self.fe.save_pretrained(path)

    @staticmethod
    def resolve(path: str | Path) -> Path:
        """`path`, or a relative one that is not under the working directory taken from the repository
        root (checkpoint configs name `systems/checkpoints/...`)."""
        path = Path(path)
        return Path(__file__).resolve().parents[2] / path if not path.is_absolute() and not path.exists() else path

    @classmethod
    def load(cls, path: str | Path) -> "TokenCTCEncoder":
        """`path`: a directory written by `save` (found as `resolve` says)."""
        from safetensors.torch import load_file
        from transformers import ParakeetEncoder, ParakeetEncoderConfig, ParakeetFeatureExtractor

        from systems.llm import weights_identity

        path = cls.resolve(path)
        meta = json.loads((path / "bridge.json").read_text())
        if meta.get("base") == "whisper":
            return WhisperTokenCTCEncoder.load_dir(path, meta)
        enc = ParakeetEncoder(ParakeetEncoderConfig(**meta.pop("encoder_config")))
        vocab = TokenVocab(meta.pop("vocab"), meta.pop("spell", False))
        model = cls(enc, ParakeetFeatureExtractor.from_pretrained(path), vocab, meta,
                    source=f"{path.name}@{weights_identity(path)}")
        model.load_state_dict({k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()})
        return model.eval()


class WhisperTokenCTCEncoder(TokenCTCEncoder):
    """The token head on Whisper's encoder, which has heard real speech and stays frozen (it is neither
    trained nor stored here: the pinned wheel brings it). Its 20 ms states are averaged over `pool`
    frames, layer-normalised and mapped down to `width`, then the adapter and the head as above.

    A directory holds `model.safetensors` (down-projection, adapter, head) and `bridge.json` (`base`
    "whisper", the Whisper spec, pool, width, the vocabulary's LLM token ids, the LLM)."""

    def __init__(self, whisper: nn.Module, vocab: TokenVocab, meta: dict, source: str = "unsaved"):
        nn.Module.__init__(self)
        whisper.requires_grad_(False)
        self._whisper = [whisper]  # in a list, not a submodule: out of parameters() and the state dict
        self.encoder, self.fe = None, None
        meta = {"base": "whisper", "pool": 2, "width": 256, **meta}
        self.pool = int(meta["pool"])
        self.down = nn.Sequential(nn.LayerNorm(whisper.dim), nn.Linear(whisper.dim, int(meta["width"])))
        self._heads(vocab, meta, source, int(meta["width"]), whisper.frame_ms * self.pool)

    @classmethod
    def from_whisper(cls, spec: str, tokenizer, texts: Iterable[str], llm: str, adapter_layers: int = 0,
                     whisper: nn.Module | None = None, min_count: int = 1) -> "WhisperTokenCTCEncoder":
        """A fresh head (and adapter) on Whisper's encoder (`spec`: "whisper-base" or a local model
        directory; `whisper`: an already built `encoders.WhisperEncoder`, for tests)."""
        from systems.audiochatllama.encoders import WhisperEncoder

        whisper = whisper or WhisperEncoder.load(spec)
        return cls(whisper, TokenVocab.from_texts(tokenizer, texts, min_count),
                   {"llm": llm, "whisper": spec, "init_encoder": whisper.source, "adapter_layers": adapter_layers})

    def _apply(self, fn, *args, **kwargs):  # .to(device) and friends move the frozen Whisper along
        self._whisper[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def _pooled(self, audios: Sequence[Audio]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            states, lengths = self._whisper[0](audios)  # (B, T, 512), (B,)
        k = self.pool
        B, T, C = states.shape
        states = nn.functional.pad(states, (0, 0, 0, (-T) % k))
        return states.reshape(B, -1, k, C).mean(2), (lengths + k - 1) // k

    def forward(self, audios: Sequence[Audio]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.adapt(*self._pooled(audios))

    def adapt(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().adapt(self.down(states), lengths)

    @torch.inference_mode()
    def base_states(self, wavs: Sequence) -> list[torch.Tensor]:
        states, lengths = self._pooled([Audio(w) for w in wavs])
        return [s[:n] for s, n in zip(states, lengths.tolist())]

    def base_parameters(self) -> list[nn.Parameter]:
        return []  # Whisper's encoder stays frozen

    @classmethod
    def load_dir(cls, path: Path, meta: dict, whisper: nn.Module | None = None) -> "WhisperTokenCTCEncoder":
        from safetensors.torch import load_file

        from systems.audiochatllama.encoders import WhisperEncoder
        from systems.llm import weights_identity

        whisper = whisper or WhisperEncoder.load(meta["whisper"])
        model = cls(whisper, TokenVocab(meta.pop("vocab"), meta.pop("spell", False)), meta,
                    source=f"{path.name}@{weights_identity(path)}+{whisper.source}")
        model.load_state_dict({k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()})
        return model.eval()


class TokenCTCASR:
    """The token-CTC encoder as a cascade's ASR: greedy decoding, the LLM's tokenizer back to text."""

    def __init__(self, encoder: TokenCTCEncoder, tokenizer):
        self.encoder, self.tokenizer = encoder, tokenizer
        self.identity = f"token-ctc:{encoder.source};greedy"

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "TokenCTCASR":
        from transformers import AutoTokenizer

        from systems.llm import resolve_llm

        enc = TokenCTCEncoder.load(path).to(device)
        return cls(enc, AutoTokenizer.from_pretrained(resolve_llm(enc.meta["llm"])[0]))

    def transcribe(self, audios: Sequence[Audio]) -> list[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self.encoder.transcribe_ids(audios)]
