"""Offline text-to-speech with espeak-ng (from the `espeakng-loader` wheel), driven in-process.

Voices are (base voice, variant) pairs such as `en-us+f3`; rate (words per minute) and pitch
(0-100) vary per utterance. Synthesis is cached on disk by a content hash of (text, voice, rate,
pitch, library version), as 16-bit FLAC at 16 kHz. espeak-ng is not thread-safe: calls are serialised.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import random
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.assets import cache_dir
from bench.audio import resample
from bench.types import SAMPLE_RATE, Audio

BASE_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
VARIANTS = ("f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
            "klatt", "klatt2", "klatt3", "adam", "Alicia", "Andy", "Annie", "belinda", "benjamin",
            "david", "edward", "grandma", "linda", "michel", "norbert", "steph", "john")
# Held out by variant: no test (or dev) voice is ever heard in training.
SPLIT_VARIANTS = {"test": ("f4", "m3", "klatt3", "belinda", "norbert"), "dev": ("f5", "m7", "david")}


def voices(split: str) -> list[str]:
    """The voices of a split: every base voice × the split's variants (train: all other variants)."""
    held = {v for vs in SPLIT_VARIANTS.values() for v in vs}
    variants = SPLIT_VARIANTS.get(split) or tuple(v for v in VARIANTS if v not in held)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"unknown split {split!r}: use train, dev or test")
    return [f"{b}+{v}" for b in BASE_VOICES for v in variants]


@dataclass(frozen=True)
class Voice:
    name: str = "en-us"
    rate: int = 175
    pitch: int = 50

    @classmethod
    def sample(cls, split: str, seed: int | str) -> "Voice":
        """A voice of `split` with rate and pitch drawn deterministically from `seed`."""
        rng = random.Random(str(seed))
        return cls(rng.choice(voices(split)), rng.randint(140, 210), rng.randint(30, 70))


class EspeakError(RuntimeError):
    pass


_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """The espeak-ng library, loaded once per process."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.rate = self.lib.espeak_Initialize(2, 0, ctypes.c_char_p(data), 0)  # synchronous
        if self.rate <= 0:
            raise EspeakError("espeak-ng failed to initialise")
        self.variants = {p.name for p in (Path(data.decode()) / "voices" / "!v").iterdir()}
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.version = (self.lib.espeak_Info(None) or b"?").decode()
        self._chunks: list[np.ndarray] = []
        self._cb = _SYNTH_CB(self._collect)
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        _, _, variant = voice.name.partition("+")
        if variant and variant not in self.variants:  # espeak would silently ignore it
            raise EspeakError(f"unknown espeak voice variant {variant!r} in {voice.name!r}")
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise EspeakError(f"unknown espeak voice {voice.name!r} (see bench.tts.voices())")
            self.lib.espeak_SetParameter(1, int(voice.rate), 0)
            self.lib.espeak_SetParameter(3, int(voice.pitch), 0)
            self._chunks = []
            raw = text.encode("utf-8") + b"\0"
            rc = self.lib.espeak_Synth(raw, len(raw), 0, 1, 0, 1, None, None)
            self.lib.espeak_Synchronize()
            if rc != 0:
                raise EspeakError(f"espeak_Synth failed ({rc}) for {text[:40]!r}")
            chunks, self._chunks = self._chunks, []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0


@lru_cache(maxsize=1)
def engine() -> _Espeak:
    return _Espeak()


def _key(text: str, voice: Voice) -> str:
    blob = "\x1f".join([text, voice.name, str(voice.rate), str(voice.pitch), engine().version, "16k-flac-v1"])
    return hashlib.sha256(blob.encode()).hexdigest()


def synthesize(text: str, voice: Voice = Voice(), cache: bool = True) -> Audio:
    """Speak `text` with `voice`; 16 kHz mono. Cached on disk unless `cache=False`."""
    import soundfile as sf

    key = _key(text, voice)
    origin = f"tts:{voice.name}:r{voice.rate}:p{voice.pitch}:{key[:12]}"
    path = cache_dir() / "tts" / key[:2] / f"{key}.flac"
    if cache and path.exists():
        data, sr = sf.read(str(path), dtype="float32")
        return Audio(data, sr, origin)
    e = engine()
    samples = resample(e.synth(text, voice), e.rate)
    if samples.size == 0:
        raise EspeakError(f"espeak produced no audio for {text[:40]!r}")
    audio = Audio(np.clip(samples, -1.0, 1.0), SAMPLE_RATE, origin)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.flac")
        sf.write(str(tmp), audio.samples, SAMPLE_RATE, subtype="PCM_16")
        os.replace(tmp, path)
    return audio
