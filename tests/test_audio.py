"""Audio I/O validation (one test per bad-input case) and the offline TTS."""
import numpy as np
import pytest
import soundfile as sf

from bench.audio import load_audio
from bench.types import Audio, AudioError


def _tone(sr=16000, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("fmt,subtype,sr,channels", [
    ("WAV", "PCM_16", 16000, 1), ("WAV", "PCM_24", 44100, 2), ("WAV", "FLOAT", 8000, 1),
    ("FLAC", "PCM_16", 22050, 1), ("FLAC", "PCM_24", 48000, 2), ("OGG", "VORBIS", 32000, 1),
])
def test_reads_formats_rates_channels_depths(tmp_path, fmt, subtype, sr, channels):
    p = tmp_path / f"x.{fmt.lower()}"
    sf.write(p, _tone(sr, 1.0, channels), sr, format=fmt, subtype=subtype)
    a = load_audio(p)
    assert a.sample_rate == 16000 and a.samples.ndim == 1 and a.samples.dtype == np.float32
    assert a.seconds == pytest.approx(1.0, abs=0.01)
    assert 0.25 < np.abs(a.samples).max() < 0.35  # downmix and resampling keep the level


def test_unreadable_file(tmp_path):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"bad\.wav: cannot read audio"):
        load_audio(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "t.flac"
    sf.write(p, _tone(), 16000, format="FLAC")
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(AudioError, match="t.flac"):
        load_audio(p)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_empty_audio(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty.wav: audio is empty"):
        load_audio(p)


def test_nan_and_inf(tmp_path):
    x = _tone()
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(p)
    with pytest.raises(AudioError, match="NaN or Inf"):
        Audio(np.array([0.0, np.inf], dtype=np.float32))


def test_silent(tmp_path):
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros(16000), 16000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(p)


def test_too_long(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, _tone(8000, 12.0), 8000)
    with pytest.raises(AudioError, match="over the 10 s limit"):
        load_audio(p, max_seconds=10)
    assert load_audio(p, max_seconds=None).seconds == pytest.approx(12.0, abs=0.01)


def test_tts_is_deterministic_cached_and_voices_split(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path))
    from bench import tts

    v = tts.Voice("en-us+f3", 170, 45)
    a = tts.synthesize("The cat sat on the mat.", v)
    assert 1.0 < a.seconds < 3.0 and a.sample_rate == 16000
    assert len(list(tmp_path.rglob("*.flac"))) == 1
    tts._engines.clear()  # (the parent's helper keeps running; only this process forgets it)
    b = tts.synthesize("The cat sat on the mat.", v)  # from the disk cache, without starting a synthesiser
    assert np.allclose(a.samples, b.samples, atol=1 / 32768) and not tts._engines
    assert not np.array_equal(tts.synthesize("The cat sat on the mat.", tts.Voice("en+m3"), cache=False).samples[:4000],
                              a.samples[:4000])
    train, dev, test = (set(tts.voices(s)) for s in ("train", "dev", "test"))
    assert train and dev and test and not (train & test) and not (train & dev) and not (dev & test)
    assert tts.Voice.sample("test", "item-1") == tts.Voice.sample("test", "item-1")
    assert tts.Voice.sample("test", "item-1").name in test
    with pytest.raises(tts.EspeakError, match="unknown espeak voice"):
        tts.synthesize("hello", tts.Voice("en-us+nosuchvariant"), cache=False)


@pytest.mark.parametrize("voice", ["en-us+f1", "en-us+Alicia", "en-us+klatt"])  # flutter, echo, Klatt noise
def test_tts_audio_does_not_depend_on_what_was_spoken_before(voice):
    """espeak-ng carries state from one utterance to the next (flutter phase, echo buffer, Klatt
    generator): spoken in-process, the same text and voice came out different the second time. Each
    utterance is spoken by a child forked from a helper that never spoke, so the samples are equal."""
    from bench import tts

    v, text = tts.Voice(voice, 170, 50), "the quick brown fox jumps over the lazy dog"
    first = tts.synthesize(text, v, cache=False).samples
    for other in ("en+m4", "en+grandma", "en-us+Alicia"):
        tts.synthesize("something else entirely, and longer than the first", tts.Voice(other), cache=False)
    assert np.array_equal(tts.synthesize(text, v, cache=False).samples, first)


def test_tts_helper_serves_a_forked_process_on_its_own(tmp_path):
    """A process forked from one with a helper (a DataLoader worker) starts its own; both give the
    same samples."""
    import multiprocessing as mp

    from bench import tts

    v = tts.Voice("en+m4", 160, 40)
    here = tts.synthesize("forked workers speak too", v, cache=False).samples
    with mp.get_context("fork").Pool(1) as pool:
        there = pool.apply(_speak, ("forked workers speak too", v))
    assert np.array_equal(here, there)
    assert tts.engine() is tts.engine()


def _speak(text, voice):
    from bench import tts

    return tts.synthesize(text, voice, cache=False).samples
