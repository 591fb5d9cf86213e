"""Conditions: deterministic changes to an item's speech, applied identically for every system.

Each condition is seeded by (item id, condition name, turn index), so every system hears the same
corrupted audio, bit for bit, in every process. Names carry their parameters:

  clean                 the item as authored
  white-snr{N}          additive white noise at N dB SNR (N may be negative: white-snr-5)
  babble-snr{N}         additive babble (several synthetic talkers) at N dB SNR
  speed{F}              speed perturbation by factor F (speed0.9, speed1.1): tempo and pitch change
  gain{N}db             gain of N dB (gain-12db, gain6db), clipped to [-1, 1] like a real recorder
  reverb-rt{T}          synthetic room reverberation with RT60 = T seconds (reverb-rt0.5)
  lowpass{HZ}           band-limited to frequencies below HZ (lowpass4000)
  telephone             band-limited to 300-3400 Hz
  wer{N}                text side, for ablations: the topline's transcript gets N % word errors
                        (substitutions, deletions, insertions); the audio is untouched
"""
from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np

from bench import voices
from bench.registry import RegistryError
from bench.types import Audio, Item, Turn

ConditionFn = Callable[[Item, int], Item]
AudioFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def seed_for(item_id: str, condition: str) -> int:
    """A 63-bit seed derived from (item id, condition): stable across processes and machines."""
    return int.from_bytes(hashlib.sha256(f"{item_id}\x1f{condition}".encode()).digest()[:8], "big") >> 1


def _on_audio(fn: AudioFn) -> ConditionFn:
    """Lift a function on samples to a condition over every spoken turn of an item."""

    def apply(item: Item, seed: int) -> Item:
        def turn(t: Turn, k: int) -> Turn:
            if not isinstance(t.audio, Audio):
                return t
            rng = np.random.default_rng([seed, k])
            out = fn(t.audio.samples.astype(np.float64), t.audio.sample_rate, rng).astype(np.float32)
            return replace(t, audio=Audio(out, t.audio.sample_rate, t.audio.origin))

        return replace(item, turn=turn(item.turn, 0), history=tuple(turn(t, k + 1) for k, t in enumerate(item.history)))

    apply.audio_only = True
    return apply


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that 10·log10(P(x) / P(noise)) = snr_db; rescaled as a whole if it would clip
    (which keeps the SNR)."""
    noise = noise * np.sqrt(power(x) / (max(power(noise), 1e-20) * 10 ** (snr_db / 10)))
    y = x + noise
    peak = float(np.abs(y).max())
    return y / peak if peak > 1.0 else y


def white_noise(snr: float) -> AudioFn:
    return lambda x, sr, rng: mix_at_snr(x, rng.standard_normal(x.size), snr)


BABBLE_TEXTS = (
    "The meeting moved to the third floor after lunch on Thursday.",
    "Could you pass me the blue folder from the shelf by the window?",
    "We walked along the harbour until the lights came on in the town.",
    "My grandmother grows tomatoes and beans in her small garden.",
    "The train was late again, so we shared a taxi from the station.",
    "Please remember to water the plants while I am away next week.",
    "He finally fixed the old radio that had been silent for years.",
    "They painted the kitchen a warm yellow colour last summer.",
)


@lru_cache(maxsize=1)
def babble_track(sample_rate: int = 16000) -> np.ndarray:
    """About 20 s of babble: several synthetic talkers (distinct voices) speaking at once."""
    from bench.tts import Voice, synthesize

    talkers = []
    for k, voice in enumerate(("en-us+m1", "en+f2", "en-gb-x-rp+m3", "en-029+f1", "en-us-nyc+m5", "en-gb-scotland+f3")):
        speech = np.concatenate([synthesize(t, Voice(voice, 160 + 7 * k, 40 + 4 * k)).samples
                                 for t in np.roll(BABBLE_TEXTS, k)])
        talkers.append(speech / np.sqrt(power(speech)))
    n = min(len(t) for t in talkers)
    return np.sum([t[:n] for t in talkers], axis=0)


def babble_noise(snr: float) -> AudioFn:
    def fn(x, sr, rng):
        track = babble_track(sr)
        reps = int(np.ceil(x.size / track.size)) + 1
        track = np.tile(track, reps)
        start = int(rng.integers(0, track.size - x.size))
        return mix_at_snr(x, track[start:start + x.size], snr)
    return fn


def speed(factor: float) -> AudioFn:
    from bench.audio import resample

    # Play the samples as if recorded at sr·factor: shorter and higher for factor > 1.
    return lambda x, sr, rng: resample(x.astype(np.float32), int(round(sr * factor)), sr).astype(np.float64)


def gain(db: float) -> AudioFn:
    return lambda x, sr, rng: np.clip(x * 10 ** (db / 20), -1.0, 1.0)


def reverb(rt60: float) -> AudioFn:
    def fn(x, sr, rng):
        t = np.arange(int(sr * rt60 * 1.2)) / sr
        rir = rng.standard_normal(t.size) * np.exp(-6.9078 * t / rt60)  # −60 dB at t = RT60
        rir[0] = 1.0  # the direct path
        n = x.size + rir.size - 1
        y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(rir, n), n)[:x.size]
        y *= np.sqrt(power(x) / max(power(y), 1e-20))
        peak = float(np.abs(y).max())
        return y / peak if peak > 1.0 else y
    return fn


def band(lo: float, hi: float) -> AudioFn:
    def fn(x, sr, rng):
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(x.size, 1 / sr)
        spec[(f < lo) | (f > hi)] = 0
        return np.fft.irfft(spec, x.size)
    return fn


_FILLERS = ("the", "a", "and", "of", "to", "in", "uh", "is", "that", "it")


def corrupt_words(text: str, rate: float, rng: np.random.Generator) -> str:
    """Inject word errors at about `rate` per word: 60 % substitutions (a near-miss spelling),
    20 % deletions, 20 % insertions of a short function word."""
    out = []
    for w in text.split():
        if rng.random() >= rate:
            out.append(w)
            continue
        kind = rng.random()
        if kind < 0.6:
            chars = list(w)
            i = int(rng.integers(0, len(chars)))
            chars[i] = "aeiouy"[int(rng.integers(0, 6))] if chars[i].lower() not in "aeiou" else "rstln"[int(rng.integers(0, 5))]
            out.append("".join(chars) if "".join(chars) != w else w + "s")
        elif kind < 0.8:
            continue
        else:
            out.extend([w, _FILLERS[int(rng.integers(0, len(_FILLERS)))]])
    return " ".join(out)


def word_errors(rate: float) -> ConditionFn:
    def apply(item: Item, seed: int) -> Item:
        def turn(t: Turn, k: int) -> Turn:
            if not t.spoken or t.transcript is None:
                return t
            return replace(t, transcript=corrupt_words(t.transcript, rate, np.random.default_rng([seed, k])))
        return replace(item, turn=turn(item.turn, 0), history=tuple(turn(t, k + 1) for k, t in enumerate(item.history)))
    return apply


def respeak(family: str, per_turn: bool) -> ConditionFn:
    """Every spoken user turn with known words spoken again by a test voice of the `family` engine
    (`bench.voices`: voices no training recipe may hear), drawn from the item's seed: one voice for the
    whole conversation, or (`per_turn`, as `voice-joe` always did: its speaking rate) one per turn. A
    spoken turn without a transcript fails the item."""

    def apply(item: Item, seed: int) -> Item:
        eng = voices.engine(family)

        def turn(t: Turn, k: int) -> Turn:
            if t.role != "user" or t.audio is None:
                return t
            if not t.transcript:
                raise ValueError(f"voice-{family} re-speaks a turn's words, and this spoken turn has no transcript")
            return replace(t, audio=eng.speak(t.transcript, eng.sample("test", [seed, k if per_turn else 0])))

        return replace(item, turn=turn(item.turn, 0), history=tuple(turn(t, k + 1) for k, t in enumerate(item.history)))

    apply.audio_only = True
    return apply


def clean(item: Item, seed: int) -> Item:
    """No change: the item as authored."""
    return item


def audio_only(name: str) -> bool:
    """Whether a condition changes nothing but the audio of an item (its words, history and instruction
    stay): what a system that reads transcripts (`System.hears_audio` False) answers the same under."""
    return name == "clean" or getattr(CONDITIONS.get(name), "audio_only", False)


_NUM = r"(-?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class Family:
    """A parameterised condition family: `<prefix><N><suffix>` (white-snr10, gain-12db)."""

    prefix: str
    suffix: str
    example: str
    factory: Callable[[float], ConditionFn]
    about: str
    valid: Callable[[float], bool]
    clean_at: float  # the parameter at which the family leaves the audio as it is (where plots draw `clean`)

    @property
    def pattern(self) -> str:
        return re.escape(self.prefix) + _NUM + re.escape(self.suffix)


FAMILIES: list[Family] = [
    Family("white-snr", "", "white-snr10", lambda v: _on_audio(white_noise(v)), "additive white noise at N dB SNR",
           lambda v: True, 40.0),
    Family("babble-snr", "", "babble-snr10", lambda v: _on_audio(babble_noise(v)), "additive babble at N dB SNR",
           lambda v: True, 40.0),
    Family("speed", "", "speed1.1", lambda v: _on_audio(speed(v)), "speed perturbation by a factor",
           lambda v: 0.5 <= v <= 2.0, 1.0),
    Family("gain", "db", "gain-12db", lambda v: _on_audio(gain(v)), "gain in dB (clipped)", lambda v: -60 <= v <= 40, 0.0),
    Family("reverb-rt", "", "reverb-rt0.5", lambda v: _on_audio(reverb(v)), "synthetic reverberation, RT60 in s",
           lambda v: 0.05 <= v <= 3.0, 0.0),
    Family("lowpass", "", "lowpass4000", lambda v: _on_audio(band(0, v)), "band-limited below N Hz",
           lambda v: 100 <= v <= 8000, 8000.0),
    Family("wer", "", "wer20", lambda v: word_errors(v / 100), "text side: N % word errors in the topline's transcript",
           lambda v: 0 <= v <= 100, 0.0),
]
FIXED: dict[str, tuple[ConditionFn, str]] = {
    "clean": (clean, "the item as authored"),
    "telephone": (_on_audio(band(300, 3400)), "band-limited to 300-3400 Hz"),
    "voice-joe": (respeak("piper", per_turn=True), "the words re-spoken by piper's neural `joe` voice (evaluation "
                  "only: no recipe trains on it), so a table shows how systems hold up on a voice family never heard"),
    "voice-kokoro": (respeak("kokoro", per_turn=False), "the words re-spoken by a Kokoro-82M test voice (a blend "
                     "holding the style no recipe hears), one voice a conversation"),
}


def family_of(name: str) -> tuple[Family, float] | None:
    """(family, parameter) of a parameterised condition name; None for a fixed one or an unknown name."""
    for fam in FAMILIES:
        m = re.fullmatch(fam.pattern, name)
        if m:
            return fam, float(m.group(1))
    return None


class Conditions:
    """Parses condition names (with parameters) into functions; the registry-like face the CLI uses."""

    def target(self, name: str) -> str:
        self.get(name)
        return name

    def get(self, name: str) -> ConditionFn:
        if name in FIXED:
            return FIXED[name][0]
        found = family_of(name)
        if found:
            fam, value = found
            if not fam.valid(value):
                raise RegistryError(f"condition {name!r}: parameter {value:g} is out of range")
            return fam.factory(value)
        examples = list(FIXED) + [f.example for f in FAMILIES]
        close = difflib.get_close_matches(name, examples, n=2, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"unknown condition {name!r}.{hint} Conditions look like: {', '.join(examples)}")

    def names(self) -> list[str]:
        return list(FIXED) + [f.example for f in FAMILIES]

    def describe(self) -> list[tuple[str, str]]:
        return [(n, d) for n, (_, d) in FIXED.items()] + [(f.example, f.about) for f in FAMILIES]


CONDITIONS = Conditions()


def apply(condition: str, item: Item) -> Item:
    """Load the item's audio and apply the condition (raises AudioError for bad audio)."""
    return CONDITIONS.get(condition)(item.materialized(), seed_for(item.id, condition))
