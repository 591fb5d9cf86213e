"""The cascade: ASR → transcript → the same chat LLM as the topline.

The LLM is told (switchable; part of the fingerprint) that user messages are ASR transcripts that
may contain errors. Every spoken turn, earlier ones included, goes through the ASR; typed turns
reach the LLM unchanged. `Generation.transcript` carries the hypothesis of the current turn, and
`seconds` the time spent in ASR and LLM plus the audio duration (for RTFx).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

from bench.plugins import Context, takes
from bench.types import Audio, Generation, Request, System, TokenLogProbs, Turn
from systems.common import DecodeConfig, Lazy, decode_config, llm_prompt_counter, to_messages
from systems.run_llm import shared_llm

TRANSCRIPT_WARNING = ("The user's messages are automatic speech recognition transcripts of what they said, "
                      "and may contain recognition errors. Interpret them sensibly.")
CHECKPOINTS = Path(__file__).parent / "checkpoints"
DEFAULT_CTC = CHECKPOINTS / "ctc-conformer"
DEFAULT_TOKEN_CTC = CHECKPOINTS / "token-ctc-smollm2"
DEFAULT_WHISPER_TOKEN_CTC = CHECKPOINTS / "token-ctc-whisper-smollm2"


def _digest(audio: Audio) -> tuple:
    """What identifies a clip's speech: its samples and rate."""
    return hashlib.blake2b(audio.samples.tobytes(), digest_size=16).digest(), audio.sample_rate


class Cascade(System):
    name = "cascade"

    heard_max = 4096  # transcripts remembered (`_transcribe`)

    def __init__(self, asr, llm, cfg: DecodeConfig = DecodeConfig(), warn: bool = True):
        self.asr, self.llm, self.cfg, self.warn = asr, llm, cfg, warn
        self._heard: dict[tuple, str] = {}  # audio digest → transcript, this process's

    def fingerprint(self) -> str:
        blob = json.dumps({"class": "Cascade/2", "asr": self.asr.identity, "llm": self.llm.identity,
                           "warning": TRANSCRIPT_WARNING if self.warn else None, **self.cfg.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def forget(self) -> None:
        """Drop the remembered transcripts (`perf` times the ASR on every pass over the same clips)."""
        self._heard.clear()

    def prompt_counter(self):
        # a spoken turn becomes its transcript: ~3 LLM tokens a second of speech (FACTS.md), 4 to be safe
        return llm_prompt_counter(self.llm, 4.0, self._system_prompt)

    def _transcribe(self, requests: Sequence[Request]) -> tuple[dict[int, str], dict[int, float], dict[str, float]]:
        """Hypotheses for every spoken user turn of every request, in one batched ASR call for the
        audio not heard before: a clip's transcript is remembered by its samples, so the same speech
        (response-ppl scores the spoken-QA clips; a conversation's earlier turns) is recognised once.
        Returns ({id(turn): text}, {id(turn): seconds of audio}, ASR seconds: {"asr": total, and the
        ASR's own stages as "asr.encoder", ... where it reports them (`last_seconds`)})."""
        turns = [t for r in requests for t in (*r.history, r.turn) if t.role == "user" and isinstance(t.audio, Audio)]
        keys = [_digest(t.audio) for t in turns]
        new = {k: t.audio for k, t in zip(keys, turns) if k not in self._heard}
        t0 = time.perf_counter()
        texts = self.asr.transcribe(list(new.values())) if new else []
        secs = {"asr": time.perf_counter() - t0}
        if new:
            secs.update({f"asr.{k}": v for k, v in (getattr(self.asr, "last_seconds", None) or {}).items()})
        got = dict(zip(new, texts))
        hyps = {id(t): got[k] if k in got else self._heard[k] for t, k in zip(turns, keys)}
        while self._heard and len(self._heard) + len(got) > self.heard_max:
            del self._heard[next(iter(self._heard))]  # the oldest first
        self._heard.update(got)
        return hyps, {id(t): t.audio.seconds for t in turns}, secs

    def _view(self, hyps: dict[int, str]):
        def view(t: Turn) -> str:
            if t.spoken:
                if id(t) not in hyps:
                    raise ValueError("the cascade needs audio for every spoken turn")
                return hyps[id(t)]
            return t.text
        return view

    def _system_prompt(self, request: Request) -> str | None:
        # the warning only where there is speech: a typed conversation is exactly the topline's
        spoken = any(t.role == "user" and t.spoken for t in (*request.history, request.turn))
        return TRANSCRIPT_WARNING if self.warn and spoken else None

    def _messages(self, request: Request, hyps: dict[int, str]):
        return to_messages(request, self._view(hyps), self._system_prompt(request))

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        hyps, durs, asr_secs = self._transcribe(requests)
        total_audio = sum(durs.values()) or 1.0
        todo = [i for i, r in enumerate(requests) if not r.transcript_only]
        t0 = time.perf_counter()
        answers = dict(zip(todo, self.llm.generate([self._messages(requests[i], hyps) for i in todo],
                                                   [self.cfg.for_request(requests[i]) for i in todo])))
        llm_secs = (time.perf_counter() - t0) / max(len(todo), 1)
        out = []
        for i, r in enumerate(requests):
            audio = sum(durs.get(id(t), 0.0) for t in (*r.history, r.turn))
            hyp = hyps.get(id(r.turn))
            text, n = answers.get(i, (hyp or "", 0))
            out.append(Generation(text=text, transcript=hyp, tokens=n, seconds={
                **{k: v * audio / total_audio for k, v in asr_secs.items()}, "llm": llm_secs if i in answers else 0.0,
                "audio": audio}))
        return out

    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        hyps, _, _ = self._transcribe([r for r, _ in pairs])
        return self.llm.logprobs_batch([(self._messages(r, hyps), target) for r, target in pairs])


def ctc_asr(ctx: Context):
    from systems.asr.ctc import ctc_identity

    path = Path(ctx.args.get("asr") or DEFAULT_CTC)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no CTC ASR checkpoint at {path}. Train one with `audiochat-bench train asr` "
            "(then export it), or pass --system-args cascade:asr=PATH to a ParakeetForCTC model directory.")
    decoder = ctx.args.get("decoder") or "auto"
    if decoder not in ("auto", "greedy", "beam"):
        raise ValueError(f"cascade: decoder={decoder!r}; use auto, greedy or beam")
    return ctx.shared(f"ctc:{path}:{decoder}", lambda: Lazy(
        ctc_identity(path, decoder),
        lambda: _ctc_load(path, ctx.options.get("device", "cpu"), decoder, shared_llm(ctx))))


def _ctc_load(path: Path, device: str, decoder: str, llm):
    from systems.asr.ctc import CTCASR

    return CTCASR.from_pretrained(path, device=device, decoder=decoder, llm=llm)


def whisper_asr(ctx: Context):
    from systems.asr.whisper import identity_of

    spec = ctx.args.get("whisper") or "whisper-base"
    return ctx.shared(f"whisper:{spec}", lambda: Lazy(
        identity_of(spec), lambda: _whisper_load(spec, ctx.options.get("device", "cpu"))))


def _whisper_load(spec: str, device: str):
    from systems.asr.whisper import WhisperASR

    return WhisperASR.load(spec, device=device)


def token_asr(ctx: Context, default: Path = DEFAULT_TOKEN_CTC):
    from bench.assets import weights_identity

    path = Path(ctx.args.get("asr") or default)
    if not (path / "bridge.json").exists():
        raise FileNotFoundError(f"no token-CTC encoder at {path}. Train one with `audiochat-bench train bridge` "
                                "(then --export it), or pass the system asr=PATH in --system-args")
    return ctx.shared(f"token-ctc:{path}", lambda: Lazy(
        f"token-ctc:{path.name}@{weights_identity(path)};greedy",
        lambda: _token_ctc_load(path, ctx.options.get("device", "cpu"))))


def _token_ctc_load(path: Path, device: str):
    from systems.audiochatllama.bridge import TokenCTCASR

    return TokenCTCASR.load(path, device=device)


def _warn(ctx: Context) -> bool:
    value = ctx.args.get("transcript_warning", "true").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"transcript_warning={value!r}; use true or false")
    return value in ("true", "1", "yes")


WARNING_ARG = "tell the LLM its input is an ASR transcript (true, the default, or false)"


@takes(asr="CTC ASR model directory (default: the embedded ctc-conformer)",
       decoder="auto (what the model's decoding.json says: n-gram beam search, then LLM rescoring), greedy, or beam "
               "(no LLM rescoring)", transcript_warning=WARNING_ARG)
def build(ctx: Context) -> Cascade:
    return Cascade(ctc_asr(ctx), shared_llm(ctx), decode_config(ctx), _warn(ctx))


@takes(whisper="Whisper model directory (default: whisper-base from PyPI)", transcript_warning=WARNING_ARG)
def build_whisper(ctx: Context) -> Cascade:
    return Cascade(whisper_asr(ctx), shared_llm(ctx), decode_config(ctx), _warn(ctx))


@takes(asr="token-CTC encoder directory from `train bridge` (default: the embedded one); decoded greedily",
       transcript_warning=WARNING_ARG)
def build_tokens(ctx: Context) -> Cascade:
    """The token-bridge encoder's own greedy transcript → the LLM: the cascade that shares
    `audiochatllama`'s acoustic model (the token bridge), so the table separates "better acoustic model" from
    "end-to-end"."""
    return Cascade(token_asr(ctx), shared_llm(ctx), decode_config(ctx), _warn(ctx))


@takes(asr="token-CTC encoder directory from `train bridge --init whisper-base` (default: the embedded one); "
           "decoded greedily", transcript_warning=WARNING_ARG)
def build_whisper_tokens(ctx: Context) -> Cascade:
    """The same for the token head on Whisper's frozen encoder: the cascade that shares
    `audiochatllama-whisper`'s acoustic model."""
    return Cascade(token_asr(ctx, DEFAULT_WHISPER_TOKEN_CTC), shared_llm(ctx), decode_config(ctx), _warn(ctx))
