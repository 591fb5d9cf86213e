"""Voice engines behind one small interface, and the rules on which voices training may hear.

An engine speaks (`speak(text, voice) -> Audio`), draws a voice of a split (`sample(split, seed)`),
tells a voice's split (`split_of(voice)`) and names its version (`identity()`, in every clip's cache key):

  espeak   espeak-ng in process (`bench.tts`): base voices × variants, held out by variant
  kokoro   Kokoro-82M from espeak's IPA (`bench.kokoro_tts`): style blends × dialects × speed, held out by style
  piper    piper's `joe` voice (`bench.piper_tts`): evaluation only, every voice of it is a test voice

Training recipes never pick voices themselves: they take a `VoiceMix` (`--voices espeak,kokoro`, weights as
`espeak=3,kokoro=1`), whose every draw is a training voice of a trainable engine, checked here (`trainable`):
no test or dev voice, never piper. The tests hold the recipes to it. A voice family is also a condition
(`voice-kokoro`, `voice-joe`: `bench.conditions`), and every row names the family that spoke it
(`family_of`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bench.types import Audio, Item


@dataclass(frozen=True)
class Engine:
    name: str
    trainable: bool  # may a training recipe hear it at all (its train-split voices)
    sample: Callable[[str, Any], Any]  # (split, seed) -> voice
    split_of: Callable[[Any], str]  # voice -> "train" | "dev" | "test"
    speak: Callable[..., Audio]  # (text, voice, cache=True) -> Audio
    identity: Callable[[], str]
    slow: bool = False  # far slower than real time on CPU: training caches its clips (see VoiceMix.speak)


def _espeak() -> Engine:
    from bench import tts

    return Engine("espeak", True, tts.Voice.sample, lambda v: tts.split_of(v.name), tts.synthesize, tts.espeak_version)


def _kokoro() -> Engine:
    from bench import kokoro_tts

    return Engine("kokoro", True, kokoro_tts.KokoroVoice.sample, lambda v: v.split, kokoro_tts.speak,
                  kokoro_tts.identity, slow=True)


def _piper() -> Engine:
    from bench import piper_tts

    # a voice is its length scale (speaking rate), 0.9-1.15, drawn as `voice-joe` always drew it
    return Engine("piper", False, lambda split, seed: round(float(np.random.default_rng(seed).uniform(0.9, 1.15)), 3),
                  lambda v: "test", lambda text, v, cache=True: piper_tts.speak(text, v), piper_tts.identity)


ENGINES: dict[str, Callable[[], Engine]] = {"espeak": _espeak, "kokoro": _kokoro, "piper": _piper}


def engine(name: str) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown voice engine {name!r}: use {', '.join(ENGINES)}")
    return ENGINES[name]()


class TrainingVoiceError(ValueError):
    """A recipe asked for a voice that training may never hear."""


def trainable(eng: Engine, voice) -> None:
    """Raise unless `voice` of `eng` may be heard in training: a trainable engine's train-split voice."""
    if not eng.trainable:
        raise TrainingVoiceError(f"the {eng.name} engine is for evaluation only: no training recipe may use it")
    split = eng.split_of(voice)
    if split != "train":
        raise TrainingVoiceError(f"{eng.name} voice {getattr(voice, 'name', voice)!r} is a {split} voice: "
                                 "training hears train voices only")


@dataclass(frozen=True)
class VoiceMix:
    """The engines a recipe's clips come from, with weights: `espeak,kokoro` (equal) or `espeak=3,kokoro=1`."""

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, spec: str) -> "VoiceMix":
        weights = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, w = part.partition("=")
            eng = engine(name.strip())
            if not eng.trainable:
                raise TrainingVoiceError(f"--voices {spec!r}: the {eng.name} engine is for evaluation only")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise ValueError(f"--voices {spec!r}: {w!r} is not a weight (use e.g. espeak=3,kokoro=1)") from None
            if weight < 0:
                raise ValueError(f"--voices {spec!r}: weights are ≥ 0")
            weights.append((eng.name, weight))
        if not weights or sum(w for _, w in weights) <= 0:
            raise ValueError(f"--voices {spec!r}: name at least one engine (espeak, kokoro) with a weight > 0")
        return cls(tuple(weights))

    @property
    def tag(self) -> str:
        """A file-name-safe name: `espeak` for espeak alone (the clips' names before mixes existed)."""
        if [n for n, _ in self.weights] == ["espeak"]:
            return "espeak"
        return "-".join(f"{n}{w:g}" for n, w in self.weights)

    def draw(self, rng: random.Random) -> Engine:
        """An engine by weight; with one engine no random draw is made (the random stream of a recipe
        is then exactly what it was before mixes)."""
        if len(self.weights) == 1:
            return engine(self.weights[0][0])
        names, w = zip(*self.weights)
        return engine(rng.choices(names, weights=w)[0])

    def speak(self, text: str, rng: random.Random, voices_per_text: int = 2) -> Audio:
        """`text` in a training voice of an engine drawn from the mix. An espeak clip is fresh each draw
        (a voice from `rng`, not cached); a slow engine's voice is one of `voices_per_text` drawn from the
        text itself and its clip is cached on disk, so an epoch after the first reads it back instead of
        synthesising it again (Kokoro is ~250× slower than espeak)."""
        eng = self.draw(rng)
        if eng.slow:
            voice = eng.sample("train", f"{text}\x1f{rng.randrange(voices_per_text)}")
        else:
            voice = eng.sample("train", rng.random())
        trainable(eng, voice)
        return eng.speak(text, voice, cache=eng.slow)


# ------------------------------------------------------------------ which family spoke a row

VOICE_CONDITIONS = {"voice-joe": "piper", "voice-kokoro": "kokoro"}


def family_of(condition: str, items: list[Item]) -> str:
    """The voice family that spoke a task's items under `condition`: the re-speaking engine of a voice
    condition; else `espeak` (built-in TTS turns), `recorded` (audio files and data sets) or `typed`
    (no spoken turn), from the items' first spoken turn."""
    if condition in VOICE_CONDITIONS:
        return VOICE_CONDITIONS[condition]
    for item in items:
        for turn in (*item.history, item.turn):
            if turn.audio is not None and turn.role == "user":
                return "espeak" if getattr(turn.audio, "voice", None) or turn.audio.origin.startswith("tts:") else "recorded"
    return "typed"
