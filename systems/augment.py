"""Training-time audio augmentation shared by the three recipes: the gain and white-noise draw every recipe
has always made, then optional levers, each with its own probability (`--augment reverb=0.5,telephone=0.3`):

  speed      resampled to 0.9–1.1× (tempo and pitch together, Kaldi's speed perturbation)
  reverb     a room: Polack's statistical impulse response (exponentially decaying noise, RT60 0.2–0.9 s)
             after a direct path 0–12 dB above the reverberant energy
  telephone  the narrow-band channel: 8 kHz, 300–3,400 Hz, 8-bit μ-law (G.711), back to 16 kHz

Levers run in the order a recording meets them (talker, room, channel) and draw from their own random
stream, so a pass with a lever hears the same voices, texts, gains and noise as the pass without it: the
two differ by the lever alone (how each is measured before it is kept). Written here, not taken from
pyroomacoustics or audiomentations: those bring scipy (and Cython at run time) for three short filters, and
training needs the variety of rooms, not their geometry."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import soxr

from bench.conditions import mix_at_snr

SR = 16000


def gain_and_noise(x: np.ndarray, cfg, rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    """A gain from `cfg.gain_db_range`, then with probability `cfg.noise_prob` white noise at an SNR from
    `cfg.snr_range` (a recipe without `gain_db_range` draws no gain)."""
    x = np.asarray(x, dtype=np.float64)
    if hasattr(cfg, "gain_db_range"):
        x = x * 10 ** (rng.uniform(*cfg.gain_db_range) / 20)
    if rng.random() < cfg.noise_prob:
        x = mix_at_snr(x, nprng.standard_normal(x.size), rng.uniform(*cfg.snr_range))
    return x


def speed(x: np.ndarray, rng: random.Random) -> np.ndarray:
    factor = rng.uniform(0.9, 1.1)
    return soxr.resample(x, SR, SR / factor)


def reverb(x: np.ndarray, rng: random.Random) -> np.ndarray:
    rt60 = rng.uniform(0.2, 0.9)
    t = np.arange(int(rt60 * SR)) / SR
    nprng = np.random.default_rng(rng.randrange(2**32))
    h = nprng.standard_normal(t.size) * np.exp(-6.9078 * t / rt60)  # −60 dB at rt60
    h[:int(0.002 * SR)] = 0  # the first reflections come after the direct sound
    h *= np.sqrt(10 ** (-rng.uniform(0, 12) / 10) / max(float(np.sum(h ** 2)), 1e-20))  # direct : reverberant
    h[0] = 1.0
    n = x.size + h.size - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[:x.size]
    return y * np.sqrt(np.mean(x ** 2) / max(float(np.mean(y ** 2)), 1e-20))  # the dry clip's level


def telephone(x: np.ndarray, rng: random.Random) -> np.ndarray:
    y = soxr.resample(x, SR, 8000)
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(y.size, 1 / 8000)
    spec[(f < 300) | (f > 3400)] = 0
    y = np.fft.irfft(spec, y.size)
    peak = max(float(np.abs(y).max()), 1e-9)
    mu = np.sign(y / peak) * np.log1p(255 * np.abs(y / peak)) / np.log(256)  # G.711 μ-law, 8 bits
    y = np.sign(mu) * np.expm1(np.abs(np.round(mu * 127) / 127) * np.log(256)) / 255 * peak
    return soxr.resample(y, 8000, SR)[:x.size]


LEVERS = {"speed": speed, "reverb": reverb, "telephone": telephone}  # in the order they are applied
AUGMENT_HELP = ("augmentation levers after gain and noise, each with its probability: speed (0.9-1.1x), reverb "
                "(a synthetic room), telephone (8 kHz, 300-3400 Hz, mu-law), e.g. reverb=0.5,telephone=0.3")


@dataclass(frozen=True)
class Levers:
    """Which levers a recipe applies, with their probabilities; `Levers.parse("")` applies none."""

    probs: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Levers":
        probs = {}
        for part in filter(None, (p.strip() for p in (spec or "").split(","))):
            name, _, p = part.partition("=")
            if name not in LEVERS:
                raise ValueError(f"--augment {spec!r}: unknown lever {name!r}; known: {', '.join(LEVERS)}")
            try:
                probs[name] = float(p) if p else 1.0
            except ValueError:
                raise ValueError(f"--augment {spec!r}: {name}'s probability {p!r} is not a number") from None
            if not 0 <= probs[name] <= 1:
                raise ValueError(f"--augment {spec!r}: {name}'s probability is in [0, 1]")
        return cls(tuple((n, probs[n]) for n in LEVERS if probs.get(n)))

    @property
    def tag(self) -> str:
        """'' without levers, else `-reverb0.5-telephone0.3` (in the names of cached voice passes)."""
        return "".join(f"-{n}{p:g}" for n, p in self.probs)

    def __call__(self, x: np.ndarray, rng: random.Random) -> np.ndarray:
        """`x` through each lever with its probability, clipped to [−1, 1] as float32; `rng` is the
        levers' own stream (see the module's docstring)."""
        for name, p in self.probs:
            if rng.random() < p:
                x = LEVERS[name](np.asarray(x, dtype=np.float64), rng)
        return np.clip(x, -1, 1).astype(np.float32)
