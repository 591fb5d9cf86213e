"""The recipes' augmentation levers (systems/augment.py): what each does to a signal, that they are seeded,
and that a pass with a lever hears the same voices, texts and noise as the pass without it."""
import random

import numpy as np
import pytest

from bench.conditions import mix_at_snr
from systems.asr.train import ASRTrainConfig
from systems.augment import SR, Levers, gain_and_noise, reverb, speed, telephone


def tone_mix(seconds=1.0, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return 0.3 * (np.sin(2 * np.pi * 100 * t) + np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 6000 * t)) \
        + 0.01 * rng.standard_normal(t.size)


def band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return spec[(f >= lo) & (f < hi)].sum()


def test_parse_orders_levers_names_them_and_refuses_unknown_ones():
    assert Levers.parse("").probs == () and Levers.parse("").tag == ""
    lv = Levers.parse("telephone=0.3, reverb")  # applied in the order a recording meets them
    assert lv.probs == (("reverb", 1.0), ("telephone", 0.3)) and lv.tag == "-reverb1-telephone0.3"
    assert Levers.parse("speed=0").probs == ()
    with pytest.raises(ValueError, match="unknown lever 'echo'.*speed, reverb, telephone"):
        Levers.parse("echo=0.5")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Levers.parse("reverb=2")
    with pytest.raises(ValueError, match="not a number"):
        Levers.parse("reverb=lots")


def test_telephone_keeps_the_narrow_band_only():
    x = tone_mix()
    y = telephone(x, random.Random(0))
    assert y.shape == x.shape and np.isfinite(y).all()
    # 1 kHz passes; 100 Hz (under 300) and 6 kHz (over 3.4 kHz) are gone
    assert band_energy(y, 900, 1100) > 0.5 * band_energy(x, 900, 1100)
    assert band_energy(y, 50, 150) < 1e-3 * band_energy(x, 50, 150)
    assert band_energy(y, 5500, 6500) < 1e-3 * band_energy(x, 5500, 6500)


def test_reverb_leaves_a_decaying_tail_and_keeps_the_level():
    x = np.zeros(SR)
    x[:800] = tone_mix(0.05)  # 50 ms of sound, then silence
    y = reverb(x, random.Random(3))
    assert y.shape == x.shape
    tail = y[int(0.1 * SR):int(0.15 * SR)]
    assert np.sqrt(np.mean(tail ** 2)) > 1e-4  # the room still rings 50 ms after the sound stopped
    assert np.mean(y ** 2) == pytest.approx(np.mean(x ** 2), rel=1e-6)
    assert np.array_equal(y, reverb(x, random.Random(3)))  # seeded
    assert not np.array_equal(y, reverb(x, random.Random(4)))


def test_speed_resamples_by_a_factor_near_one():
    x = tone_mix()
    lengths = [speed(x, random.Random(s)).size for s in range(20)]
    assert all(0.9 * x.size - 2 <= n <= x.size / 0.9 + 2 for n in lengths)
    assert len(set(lengths)) > 10


def test_levers_apply_with_their_probability_and_clip_to_float32():
    x = tone_mix()
    assert np.array_equal(Levers.parse("")(x * 5, random.Random(0)), np.clip(x * 5, -1, 1).astype(np.float32))
    rng = random.Random(0)
    applied = sum(Levers.parse("speed=0.5")(x, rng).size != x.size for _ in range(200))
    assert 70 < applied < 130
    y = Levers.parse("reverb,telephone")(x, random.Random(1))
    assert y.dtype == np.float32 and np.abs(y).max() <= 1


def test_gain_and_noise_is_the_recipes_old_draw():
    """Bit for bit what the three recipes drew before the levers existed (same stream, same clip)."""
    cfg = ASRTrainConfig()
    x = tone_mix(0.5)
    for seed in range(6):
        rng, nprng = random.Random(seed), np.random.default_rng(seed)
        old = x.astype(np.float64) * 10 ** (rng.uniform(*cfg.gain_db_range) / 20)
        if rng.random() < cfg.noise_prob:
            old = mix_at_snr(old, nprng.standard_normal(old.size), rng.uniform(*cfg.snr_range))
        rng2, nprng2 = random.Random(seed), np.random.default_rng(seed)
        assert np.array_equal(gain_and_noise(x, cfg, rng2, nprng2), old)
        assert rng.random() == rng2.random()


def test_a_lever_changes_the_audio_not_the_voices(monkeypatch):
    """The e2e recipe's batch with and without a lever: the same texts and the same draws of the main
    stream (voices, noise), audio that differs."""
    from bench.types import Audio
    from bench.voices import VoiceMix
    from systems.audiochatllama.train import E2ETrainConfig, sample_batch

    def speak(self, text, rng, voices_per_text=2):
        rng.random()  # a voice draw, as the real mix makes
        return Audio(tone_mix(0.3, seed=len(text)).astype(np.float32) * 0.5)

    monkeypatch.setattr(VoiceMix, "speak", speak)
    rows = [{"transcript": f"sentence number {i}", "instruction": "", "ids": [i]} for i in range(8)]
    batches = []
    for augment in ("", "reverb=1"):
        rng, nprng = random.Random(5), np.random.default_rng(5)
        reqs, ids, _ = sample_batch(rows, E2ETrainConfig(batch_size=4, augment=augment), rng, nprng)
        batches.append(([r.turn.transcript for r in reqs], [r.turn.audio.samples for r in reqs], rng.random()))
    (texts0, audio0, next0), (texts1, audio1, next1) = batches
    assert texts0 == texts1 and next0 == next1
    assert all(not np.array_equal(a, b) for a, b in zip(audio0, audio1))
