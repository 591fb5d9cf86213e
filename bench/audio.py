"""Audio I/O: read wav/flac/ogg at any rate, channel count and bit depth, downmix to mono,
resample to 16 kHz, and validate. Every problem becomes an `AudioError` naming the file."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bench.types import SAMPLE_RATE, Audio, AudioError

MAX_SECONDS = 120.0  # default limit; longer inputs are almost always a mistake for this benchmark
SILENCE_PEAK = 1e-4  # peak amplitude below which a clip counts as silent


def resample(samples: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if sr == target:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples.astype(np.float32, copy=False), sr, target, quality="HQ").astype(np.float32)


def validate(samples: np.ndarray, sr: int, origin: str, max_seconds: float | None = MAX_SECONDS) -> None:
    if samples.size == 0:
        raise AudioError(f"{origin}: audio is empty (0 samples)")
    if not np.isfinite(samples).all():
        raise AudioError(f"{origin}: audio contains NaN or Inf samples")
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        raise AudioError(f"{origin}: audio is silent (peak amplitude below {SILENCE_PEAK})")
    if max_seconds is not None and samples.size / sr > max_seconds:
        raise AudioError(f"{origin}: audio is {samples.size / sr:.1f} s long, over the {max_seconds:.0f} s "
                         "limit (raise it with max_seconds / --max-audio-seconds if you mean it)")


def load_audio(source: str | Path | bytes, max_seconds: float | None = MAX_SECONDS,
               origin: str | None = None) -> Audio:
    """Read an audio file (path or bytes) into a validated 16 kHz mono `Audio`."""
    import soundfile as sf

    origin = origin or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(f"{origin}: no such file")
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                           dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises its own error types for every kind of bad file
        raise AudioError(f"{origin}: cannot read audio ({str(e).strip() or type(e).__name__})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{origin}: audio is empty (0 samples)")
    mono = data.mean(axis=1)
    validate(mono, sr, origin, max_seconds)
    return Audio(resample(mono, sr), SAMPLE_RATE, origin)


def write_audio(path: str | Path, audio: Audio) -> None:
    import soundfile as sf

    sf.write(str(path), audio.samples, audio.sample_rate, subtype="PCM_16")
