"""Core types shared by the harness, systems and tasks.

`bench` knows nothing of any particular model or task: systems (`systems/`) and tasks (`tasks/`)
depend on these types only, never on each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Audio that cannot be used (empty, NaN/Inf, silent, too long...). The message names the problem."""


@dataclass(frozen=True, eq=False)
class Audio:
    """Mono float32 samples at `sample_rate`, validated on creation. `origin` says where it came from."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    origin: str = "<memory>"

    def __post_init__(self) -> None:
        s = np.asarray(self.samples)
        if s.ndim != 1:
            raise AudioError(f"{self.origin}: expected mono samples, got shape {s.shape}")
        if s.size == 0:
            raise AudioError(f"{self.origin}: audio is empty")
        if not np.isfinite(s).all():
            raise AudioError(f"{self.origin}: audio contains NaN or Inf samples")
        if self.sample_rate <= 0:
            raise AudioError(f"{self.origin}: invalid sample rate {self.sample_rate}")
        object.__setattr__(self, "samples", s.astype(np.float32, copy=False))

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass(frozen=True)
class AudioRef:
    """Audio loaded only when needed (a file to read, a text to synthesise), so that a corrupt file
    fails its own item inside the runner instead of the whole task listing."""

    loader: Callable[[], Audio]
    origin: str
    voice: str | None = None  # the TTS voice that speaks it (`en-us+f3`), where a TTS does

    def load(self) -> Audio:
        return self.loader()


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation.

    A typed user turn has `text`. A spoken user turn has `audio` and, where known, the gold
    `transcript` (which only the text topline may read). Assistant and system turns have `text`.
    """

    role: str
    text: str | None = None
    audio: Audio | AudioRef | None = None
    transcript: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown role {self.role!r}: use system, user or assistant")
        if self.text is None and self.audio is None and self.transcript is None:
            raise ValueError("a turn needs text, audio or a transcript")

    @property
    def spoken(self) -> bool:
        return self.text is None

    def materialized(self) -> "Turn":
        """This turn with its audio loaded (raises AudioError for bad audio)."""
        if isinstance(self.audio, AudioRef):
            return replace(self, audio=self.audio.load())
        return self

    @property
    def shown(self) -> str:
        """For display: the text, else the gold transcript, else a placeholder."""
        return self.text if self.text is not None else self.transcript if self.transcript is not None else "(audio)"

    @property
    def gold_text(self) -> str:
        """What the user said or typed, as text (the topline's view of the turn)."""
        if self.text is not None:
            return self.text
        if self.transcript is None:
            raise ValueError("spoken turn has no gold transcript")
        return self.transcript


@dataclass(frozen=True)
class Item:
    """One thing to answer: the current user `turn`, an optional earlier `history`, an optional
    `instruction` (given to every system as its system prompt) and gold `references`."""

    id: str
    turn: Turn
    history: tuple[Turn, ...] = ()
    instruction: str | None = None
    references: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def materialized(self) -> "Item":
        """This item with every audio reference loaded: what systems receive."""
        return replace(self, turn=self.turn.materialized(), history=tuple(t.materialized() for t in self.history))


@dataclass(frozen=True)
class Request:
    """What a system is asked: answer `turn` after `history`, following `instruction`.

    `transcript_only`: the task scores only the system's reading of the spoken turn (ASR), so a
    system that has an explicit transcript may skip generating a response. `max_new_tokens` and
    `stop`: how long the answer may be, the task's (`Task.max_new_tokens`, `Task.stop`; None: the
    system's own cap): at most that many generated tokens, and the answer ends before the first stop
    string that follows its opening whitespace."""

    turn: Turn
    history: tuple[Turn, ...] = ()
    instruction: str | None = None
    transcript_only: bool = False
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """A system's answer. `transcript` is the system's own reading of the spoken turn (cascade's
    ASR hypothesis), `seconds` its timing by stage, `tokens` the number of generated tokens.
    For scoring tasks, `text` is the scored target, `tokens` its length and `nll` its negative
    log-likelihood (nats) under the system."""

    text: str
    transcript: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    nll: float | None = None


@dataclass(frozen=True)
class TokenLogProbs:
    """Teacher-forced log-probabilities (natural log) of each target token."""

    logprobs: tuple[float, ...]

    @property
    def nll(self) -> float:
        return -float(sum(self.logprobs))

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / max(len(self.logprobs), 1))


class System:
    """The contract every system implements.

    `fingerprint()` must change whenever the outputs could change (weights, decoding config,
    prompts): it is part of the cache key, so one model is never served another's outputs.
    """

    name: str = "system"
    # False: the system reads each spoken turn's transcript and never its audio (the text topline), so its
    # output under a condition that changes only the audio is its clean output, generated once (bench.runner)
    hears_audio: bool = True

    def fingerprint(self) -> str:
        raise NotImplementedError

    def generate(self, turn: Turn, history: Sequence[Turn] = (), instruction: str | None = None) -> Generation:
        """Answer the user's `turn` (spoken or typed) after `history`."""
        return self.generate_batch([Request(turn, tuple(history), instruction)])[0]

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        """Answer many requests; real systems override this to batch. Default: one at a time."""
        if type(self).generate is System.generate:
            raise NotImplementedError(f"{type(self).__name__} must implement generate or generate_batch")
        return [self.generate(r.turn, r.history, r.instruction) for r in requests]

    def prompt_counter(self) -> "tuple[Callable[[Request], int], int | None] | None":
        """(count, context) for `serve`, which checks its prompt limit and reports `usage` with it before
        any work: `count(request)` the tokens of the request's prompt in this system's model (a spoken
        turn as what it becomes once heard), safe to call from threads other than the generating one;
        `context` the model's context length (None: unknown). None: no tokenizer (serve estimates)."""
        return None

    def score(self, request: Request, target: str) -> TokenLogProbs:
        """Teacher-forced log-probabilities of `target` as the answer to `request`."""
        return self.score_batch([(request, target)])[0]

    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        """Score many (request, target) pairs; real systems override this to batch."""
        if type(self).score is System.score:
            raise NotImplementedError(f"{type(self).__name__} cannot score targets")
        return [self.score(r, t) for r, t in pairs]


# A role, not a system: the run's topline (the system that reads the gold text), the first of the
# plan's `toplines` (a suite declares them). A metric's `needs` or a task's `reference_system` may name
# it; the harness binds it to the system that plays it in the run (bench.evaluate.build_tasks).
TOPLINE = "topline"


@dataclass(frozen=True)
class Metric:
    """A metric of a task.

    kind "item": `fn(item, generation, context) -> float | None`, reported as the mean over items
    (None: not applicable to this item).
    kind "corpus" (WER, BLEU, chrF): `fn(item, generation, context) -> sufficient statistics`
    (a sequence of numbers per item) and `aggregate(summed statistics) -> float`: the corpus score
    of the whole set, never a mean of per-item scores; bootstrap resamples sum the same statistics.
    `context` maps `needs` (another system's name, or a role such as TOPLINE) to that system's generation
    for the same item, or None.
    """

    name: str
    kind: str
    higher_is_better: bool
    fn: Callable[..., Any]
    aggregate: Callable[[np.ndarray], float] | None = None
    needs: str | None = None  # another system whose outputs the metric needs: its name, or a role (TOPLINE)
    timing: bool = False  # machine-dependent (RTFx, ...): reported, never gated by `compare`
    # the system that plays `needs` in this run, bound by the harness (None: `needs` is a system's name)
    bound: str | None = None
    # fields every row of this metric carries, read at scoring time: what computed the number where more
    # than one way exists (the WER normaliser: {"normalizer": "whisper (...)"}); scoring only, never a cache key
    labels: Callable[[], Mapping[str, Any]] | None = None

    @property
    def source(self) -> str | None:
        """The system whose outputs the metric needs in this run."""
        return self.bound or self.needs

    def __post_init__(self) -> None:
        if self.kind not in ("item", "corpus"):
            raise ValueError(f"metric kind must be 'item' or 'corpus', got {self.kind!r}")
        if (self.kind == "corpus") != (self.aggregate is not None):
            raise ValueError(f"metric {self.name}: a corpus metric needs `aggregate`, an item metric must not have one")


class Task:
    """The contract every task implements: a small declarative object.

    `version` enters the cache key: bump it when items, instruction or prompting change.
    """

    name: str = "task"
    version: str = "1"
    description: str = ""
    metrics: tuple[Metric, ...] = ()
    transcript_only: bool = False  # see Request.transcript_only
    # A scoring task ("score") asks each system for the likelihood of the `reference_system`'s
    # answer to each item instead of a generation (the response-perplexity metric).
    mode: str = "generate"
    reference_system: str | None = None  # whose answers a scoring task scores: a system's name or a role (TOPLINE)
    primary: str | None = None  # the metric that leads the task in the headline (default: its first)
    # How long its answers are, the same for every system: a cap on generated tokens (None: the run's
    # `max_new_tokens`; the run's cap still applies where smaller) and strings that end an answer. Both
    # reach each system in its `Request` and are part of the output cache key (bench.runner.task_gen_config).
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def items(self, limit: int | None = None) -> list[Item]:
        raise NotImplementedError

    def primary_metric(self) -> str | None:
        """The headline metric: `primary`, else the first metric that is not a timing."""
        return self.primary or next((m.name for m in self.metrics if not m.timing), None)


def first_n(items: Iterable[Item], limit: int | None) -> list[Item]:
    out = list(items)
    return out if limit is None else out[:limit]
