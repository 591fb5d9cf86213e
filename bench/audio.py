"""Audio I/O: read wav/flac/ogg at any rate, channel count and bit depth, downmix to mono,
resample to 16 kHz, and validate. Every problem becomes an `AudioError` naming the file."""
from __future__ import annotations

import io
import re
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
               origin: str | None = None, max_samples: int | None = None) -> Audio:
    """Read an audio file (path or bytes) into a validated 16 kHz mono `Audio`.

    The limits (`max_seconds`; `max_samples`, frames × channels) are checked against the file's header
    before anything is decoded, and decoding stops one frame past them whatever the header says (a
    stream may declare no length), so a small compressed file cannot decode into gigabytes."""
    import soundfile as sf

    origin = origin or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise AudioError(f"{origin}: no such file")
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as f:
            sr, channels, frames = f.samplerate, f.channels, f.frames
            cap = _frame_cap(sr, channels, max_seconds, max_samples)
            if cap is not None and frames < _UNKNOWN_LENGTH and frames > cap:
                raise AudioError(_too_long(origin, frames, sr, channels, max_seconds, max_samples))
            data = f.read(frames=-1 if cap is None else cap + 1, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # libsndfile raises its own error types for every kind of bad file
        why = getattr(e, "error_string", None) or _OBJECT_REPR.sub("the audio", str(e)).strip() or type(e).__name__
        raise AudioError(f"{origin}: cannot read audio ({why})") from None
    if cap is not None and data.shape[0] > cap:  # the header understated the length
        raise AudioError(_too_long(origin, None, sr, channels, max_seconds, max_samples))
    if data.shape[0] == 0:
        raise AudioError(f"{origin}: audio is empty (0 samples)")
    mono = data.mean(axis=1)
    validate(mono, sr, origin, max_seconds)
    return Audio(resample(mono, sr), SAMPLE_RATE, origin)


_UNKNOWN_LENGTH = 2 ** 62  # libsndfile reports a stream that declares no length as 2**63 - 1 frames
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x…>": no internals in messages


def _frame_cap(sr: int, channels: int, max_seconds: float | None, max_samples: int | None) -> int | None:
    caps = ([int(max_seconds * sr)] if max_seconds is not None else []) + \
        ([max_samples // max(channels, 1)] if max_samples is not None else [])
    return min(caps) if caps else None


def _too_long(origin: str, frames: int | None, sr: int, channels: int, max_seconds: float | None,
              max_samples: int | None) -> str:
    size = f"{frames / sr:.1f} s long ({channels} channel(s) at {sr} Hz)" if frames is not None else \
        f"longer than the limit ({channels} channel(s) at {sr} Hz)"
    limits = " and ".join(([f"the {max_seconds:.0f} s limit"] if max_seconds is not None else [])
                          + ([f"{max_samples} samples"] if max_samples is not None else []))
    return (f"{origin}: audio is {size}, over {limits} (checked before decoding; raise it with max_seconds / "
            "--max-audio-seconds if you mean it)")


def write_audio(path: str | Path, audio: Audio) -> None:
    import soundfile as sf

    sf.write(str(path), audio.samples, audio.sample_rate, subtype="PCM_16")
