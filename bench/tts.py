"""Offline text-to-speech with espeak-ng (from the `espeakng-loader` wheel), driven in-process.

Voices are (base voice, variant) pairs such as `en-us+f3`; rate (words per minute) and pitch
(0-100) vary per utterance. Synthesis is cached on disk by a content hash of (text, voice, rate,
pitch, library version), as 16-bit FLAC at 16 kHz. espeak-ng is not thread-safe: calls are serialised.

The audio is a function of (text, voice) alone. espeak-ng keeps state from one utterance to the next
in function statics that no call resets (the pitch-flutter phase, the echo buffer, the Klatt
generator), so in one process the same text and voice gave different samples, even different lengths,
depending on what had been spoken before. So each utterance is synthesised in a child forked from a
small helper process that has loaded the library and never spoken (`python -m bench.tts --serve`): every
child starts from the same state. Where `os.fork` is missing, or with AUDIOCHAT_TTS_INPROCESS=1,
synthesis runs in-process as before, and is not reproducible across runs.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
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


def split_of(name: str) -> str:
    """The split of an espeak voice name by its variant: test, dev, or train (a voice without a
    held-out variant, `en-us` alone included)."""
    _, _, variant = name.partition("+")
    return next((split for split, vs in SPLIT_VARIANTS.items() if variant in vs), "train")


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


@functools.lru_cache(maxsize=None)
def espeak_version() -> str:
    """The library's version string (part of every clip's cache key). Read without initialising it or
    starting a helper process, so a run that finds every clip on disk never starts one."""
    import espeakng_loader

    lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
    lib.espeak_Info.restype = ctypes.c_char_p
    return (lib.espeak_Info(None) or b"?").decode()


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

    def phonemes(self, text: str, voice: str) -> str:
        """espeak-ng's IPA for `text` in `voice` (clauses joined by a space; punctuation is not kept):
        what the Kokoro engine speaks."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"unknown espeak voice {voice!r} (see bench.tts.voices())")
            self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            ptr = ctypes.pointer(ctypes.c_char_p(text.encode("utf-8")))
            out = []
            while ptr.contents.value:  # one clause a call; the pointer moves on
                out.append((self.lib.espeak_TextToPhonemes(ptr, 1, 0x02) or b"").decode("utf-8"))  # UTF-8 in, IPA out
        return " ".join(p.strip() for p in out if p.strip())


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EspeakError("the espeak-ng helper process ended unexpectedly (see its error above)")
    return data


class _Forked:
    """Client of the helper process (see the module docstring): same interface as `_Espeak`."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.tts", "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        hello = json.loads(self.proc.stdout.readline() or b"null")
        if not hello:
            raise EspeakError("the espeak-ng helper process did not start (see its error above)")
        self.rate = hello["rate"]
        self.lock = threading.Lock()

    def _ask(self, request: dict) -> bytes:
        with self.lock:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            (n,) = struct.unpack("<q", _read_exact(self.proc.stdout, 8))
            data = _read_exact(self.proc.stdout, abs(n))
        if n < 0:
            raise EspeakError(data.decode())
        return data

    def synth(self, text: str, voice: Voice) -> np.ndarray:
        data = self._ask({"text": text, "voice": voice.name, "rate": voice.rate, "pitch": voice.pitch})
        return np.frombuffer(data, np.int16).astype(np.float32) / 32768.0

    def phonemes(self, text: str, voice: str) -> str:
        return self._ask({"phonemes": text, "voice": voice}).decode("utf-8")

    def close(self, pid: int) -> None:
        if os.getpid() == pid:  # at exit: end the helper (a forked child leaves its parent's alone)
            self.proc.stdin.close()
            self.proc.wait()


def _serve() -> None:
    """The helper: load espeak-ng, say hello, then for each request line fork a child that speaks it
    from the library's untouched state and sends back the 16-bit samples (the helper relays them, so a
    child that dies still gets an answer)."""
    e = _Espeak()
    e.lib.espeak_SetVoiceByName(b"en")  # load the English dictionary once, not in every child (no speech)
    out, requests = sys.stdout.buffer, sys.stdin.buffer
    gc.freeze()  # no collector passes over inherited objects in the children (fewer copied pages)
    out.write(json.dumps({"rate": e.rate}).encode() + b"\n")
    out.flush()
    for line in requests:
        req = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak, write, leave without running any cleanup of the parent's
            os.close(r)
            try:
                if "phonemes" in req:
                    data = e.phonemes(req["phonemes"], req["voice"]).encode("utf-8")
                else:
                    data = (e.synth(req["text"], Voice(req["voice"], req["rate"], req["pitch"])) * 32768.0).astype(np.int16).tobytes()
                reply = struct.pack("<q", len(data)) + data
            except Exception as err:  # an unknown voice, a failed synthesis: the caller raises it
                msg = f"{err}".encode()
                reply = struct.pack("<q", -len(msg)) + msg
            with os.fdopen(w, "wb") as f:
                f.write(reply)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            reply = f.read()
        _, status = os.waitpid(pid, 0)
        if len(reply) < 8 or len(reply) != 8 + abs(struct.unpack("<q", reply[:8])[0]):
            msg = f"espeak-ng crashed (wait status {status}) on {req.get('text', req.get('phonemes'))[:40]!r}".encode()
            reply = struct.pack("<q", -len(msg)) + msg
        out.write(reply)
        out.flush()


_engines: dict[int, object] = {}


def engine() -> _Espeak | _Forked:
    """This process's synthesiser (a process forked from one that had an engine starts its own)."""
    pid = os.getpid()
    if pid not in _engines:
        forked = hasattr(os, "fork") and os.environ.get("AUDIOCHAT_TTS_INPROCESS", "") in ("", "0")
        _engines.clear()  # another process's helper pipes, inherited: not ours to use
        _engines[pid] = _Forked() if forked else _Espeak()
        if forked:
            atexit.register(_engines[pid].close, pid)
    return _engines[pid]


def _key(text: str, voice: Voice) -> str:
    blob = "\x1f".join([text, voice.name, str(voice.rate), str(voice.pitch), espeak_version(), "16k-flac-v2"])
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


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
