"""What `serve` accepts, before any work: the OpenAI request bodies it reads, the limits it checks on
the way in (body, JSON, host, audio frames, prompt tokens) and the responses it writes. No I/O here:
bench/serve.py reads the bytes off the socket and answers; everything that decides whether a request
is answered is in this file, so that the limits can be read and tested in one place.

Every refusal is an `ApiError`, answered in OpenAI's error shape with its HTTP status.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.types import AudioError, Generation, Request, System, Turn

AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
# Audio "data" that is a URL (file:, http:, data:, s3:...; base64 has no ':') or, when it is not valid
# base64 either, a path. Only for a clear message: nothing from a request is ever opened or fetched.
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:")
_PATH = re.compile(r"^\s*(/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\])")
# Hostnames that can only name this machine: a page on another origin that rebinds its own name to
# 127.0.0.1 still sends that name in Host, so nothing else is answered unless allowed (--allow-host).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Audio decoding runs in the connection threads, before the queue: at most this many at once, so
# that many concurrent uploads cannot multiply its peak memory (each is bounded by Limits.max_samples).
_DECODING = threading.BoundedSemaphore(2)


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        kind = ("invalid_request_error" if self.status < 500 and self.status != 429
                else "rate_limit_error" if self.status == 429 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may cost, all checked before any model work. `max_prompt_tokens` None: the
    served model's context less the answer's length (`Server` resolves it); `long_prompt_tokens`: a
    prompt longer than this waits in its own lane (see `Batcher`). `max_samples` bounds the decoded
    audio (frames × channels, read from the file's header before decoding): 120 s of 48 kHz stereo."""

    max_body_bytes: int = 25 * 2 ** 20
    max_audio_seconds: float = 120.0
    max_samples: int = 120 * 48000 * 2
    max_prompt_tokens: int | None = None
    long_prompt_tokens: int = 1024
    allowed_hosts: tuple[str, ...] = field(default=LOOPBACK_HOSTS)


# ---------------------------------------------------------------------------------------------
# Before the body: host, content type, length

def check_host(header: str | None, allowed: tuple[str, ...]) -> None:
    """Host must name an allowed host (any port); "*" in `allowed` allows every host."""
    if "*" in allowed:
        return
    if not header:
        raise ApiError(400, "send a Host header", code="host_not_allowed")
    host = header.strip().lower()
    host = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host not in allowed:
        raise ApiError(403, f"Host {header.strip()[:100]!r} is not served here (this server answers "
                       f"{', '.join(allowed)}; serve --allow-host adds a name)", code="host_not_allowed")


def check_content_type(header: str | None) -> None:
    # A browser page may POST text/plain across origins without asking first; JSON needs a preflight.
    if (header or "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "send the body as JSON with Content-Type: application/json", code="unsupported_media_type")


def body_length(content_length: list[str], transfer_encoding: str | None, limit: int) -> int:
    """The body's length from its headers: one Content-Length of digits only, no Transfer-Encoding
    (a proxy and this server must agree on where a body ends), at most `limit`."""
    if transfer_encoding is not None:
        raise ApiError(411, "send a Content-Length (Transfer-Encoding bodies are not accepted)")
    values = {v.strip() for v in content_length}
    if not values:
        raise ApiError(411, "send a Content-Length header")
    if len(values) > 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
        raise ApiError(400, "Content-Length must be one non-negative whole number")
    n = int(next(iter(values)))
    if n > limit:
        raise ApiError(413, f"the body is {n} bytes, over this server's limit of {limit} "
                       "(serve --max-body-mb raises it)", code="request_too_large")
    return n


def parse_json(raw: bytes) -> Any:
    """The JSON of a body: strict UTF-8, nesting within the parser's depth, no lone surrogates (which
    no tokenizer can encode)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from None
    todo = [body]
    while todo:  # not recursive: the parser bounds the depth, this must not add a stack of its own
        x = todo.pop()
        if isinstance(x, dict):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
        elif isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair): "
                               "send valid Unicode text") from None
    return body


# ---------------------------------------------------------------------------------------------
# OpenAI request ↔ harness request

def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text", ""), str) for p in content):
            return "\n".join(p.get("text", "") for p in content)
    raise ApiError(400, f"{where}: content must be a string or a list of text parts", param=where)


def _audio_of(part: dict, where: str, limits: Limits):
    from bench.audio import load_audio

    spec = part.get("input_audio")
    if not isinstance(spec, dict):
        raise ApiError(400, f"{where}: input_audio must be an object {{data: BASE64, format: \"wav\"}}", param=where)
    extra = sorted(set(spec) - {"data", "format"})
    if extra:
        raise ApiError(400, f"{where}: input_audio takes only data (inline base64) and format; {extra[0]!r} is not "
                       "accepted (this server never reads files or fetches URLs)", param=where)
    data, fmt = spec.get("data"), spec.get("format")
    if fmt is not None and fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"{where}: audio format {str(fmt)[:20]!r} is not one of {', '.join(AUDIO_FORMATS)}",
                       param=where)
    if not isinstance(data, str) or not data:
        raise ApiError(400, f"{where}: input_audio.data must be the audio file's bytes, base64-encoded", param=where)
    refused = ApiError(400, f"{where}: input_audio.data looks like a path or URL; send the audio itself, "
                       "base64-encoded (this server never reads files or fetches URLs)", param=where)
    if _URL.match(data[:64]):
        raise refused
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        if _PATH.match(data[:64]):
            raise refused from None
        raise ApiError(400, f"{where}: input_audio.data is not valid base64", param=where) from None
    try:
        with _DECODING:
            return load_audio(raw, max_seconds=limits.max_audio_seconds, origin=where, max_samples=limits.max_samples)
    except AudioError as e:
        raise ApiError(400, str(e), code="invalid_audio", param=where) from None


def _user_turn(content: Any, where: str, limits: Limits) -> Turn:
    if isinstance(content, str):
        return Turn("user", text=content)
    if not isinstance(content, list) or not content:
        raise ApiError(400, f"{where}: content must be a string or a non-empty list of parts", param=where)
    for k, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind not in ("text", "input_audio"):
            hint = " (this server never fetches URLs or reads files)" if kind in ("audio_url", "file", "input_file",
                                                                                 "image_url") else ""
            raise ApiError(400, f"{where}[{k}]: part type {str(kind)[:40]!r} is not supported; send text or "
                           "input_audio" + hint, param=where)
    audio = [p for p in content if p["type"] == "input_audio"]
    if not audio:
        return Turn("user", text=_text_of(content, where))
    if len(audio) > 1 or len(audio) != len(content):
        raise ApiError(400, f"{where}: a user message is either text or exactly one input_audio part (a spoken "
                       "turn); put instructions in a system message and further speech in further user messages",
                       param=where)
    return Turn("user", audio=_audio_of(audio[0], f"{where}[0]", limits))


def _check_decoding(body: Any, model: str, max_new_tokens: int) -> tuple[int | None, tuple[str, ...]]:
    """The checks every completion body passes: a JSON object, for the served model, greedy, one answer
    of at most the served length. Returns the answer length asked for (`max_tokens`: None where not
    sent) and the stop strings (`stop`: a string or up to 4), which a run's endpoint sends per task."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if "model" not in body:
        raise ApiError(400, f"missing 'model': this server serves {model!r}", param="model")
    if body["model"] != model:
        raise ApiError(404, f"model {str(body['model'])[:100]!r} is not served here; this server serves {model!r} "
                       "(GET /v1/models)", code="model_not_found", param="model")
    if body.get("stream"):
        raise ApiError(400, "streaming is not supported: send stream false", param="stream")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1 (greedy decoding has one answer)", param="n")
    if body.get("temperature") not in (None, 0, 0.0):
        raise ApiError(400, "this server decodes greedily only: send temperature 0 or omit it", param="temperature")
    if body.get("top_p") not in (None, 1, 1.0):
        raise ApiError(400, "this server decodes greedily only: send top_p 1 or omit it", param="top_p")
    asked = None
    for key in ("max_tokens", "max_completion_tokens"):
        n = body.get(key)
        if n is None:
            continue
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_new_tokens:
            raise ApiError(400, f"{key}={str(n)[:20]}: this server answers with at most {max_new_tokens} "
                           f"tokens (serve --max-new-tokens); send 1 to {max_new_tokens} or omit it", param=key)
        asked = n if asked is None else min(asked, n)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a string or a list of at most 4 non-empty strings", param="stop")
    return asked, tuple(stops)


def parse_chat(body: Any, model: str, max_new_tokens: int, limits: Limits) -> Request:
    """The harness request of an OpenAI chat-completions body (ApiError, with its HTTP status, if not)."""
    asked, stop = _check_decoding(body, model, max_new_tokens)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    instruction: list[str] = []
    turns: list[Turn] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"{where}: role {str(role)[:40]!r} is not one of system, developer, user, assistant",
                           param=where)
        if role in ("system", "developer") and not turns:
            instruction.append(_text_of(m.get("content"), where))
        elif role == "user":
            turns.append(_user_turn(m.get("content"), f"{where}.content", limits))
        else:
            turns.append(Turn("system" if role == "developer" else role, text=_text_of(m.get("content"), where)))
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be a user message (the turn to answer)", param="messages")
    ext = body.get("audiochat") or {}
    only = ext.get("transcript_only", False) if isinstance(ext, dict) else None
    if not isinstance(only, bool):
        raise ApiError(400, "audiochat must be an object and audiochat.transcript_only true or false",
                       param="audiochat")
    return Request(turns[-1], tuple(turns[:-1]), "\n".join(instruction) or None, transcript_only=only,
                   max_new_tokens=asked, stop=stop)


@dataclass(frozen=True)
class EmbedsRequest:
    """A completions body with prompt embeddings: the (T, hidden) tensor and the answer length asked."""

    embeds: Any
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def shape(self):
        return self.embeds.shape


def parse_embeds(body: Any, model: str, max_new_tokens: int, limits: Limits) -> EmbedsRequest:
    """The (T, hidden) prompt embeddings of a completions body with vLLM's `prompt_embeds` (base64 of
    `torch.save`; read with `weights_only`, so it can hold tensors and nothing that runs)."""
    asked, stop = _check_decoding(body, model, max_new_tokens)
    data = body.get("prompt_embeds")
    if data is None:
        raise ApiError(400, "send prompt_embeds (base64 of torch.save of a (tokens, hidden) tensor, the whole "
                       "templated prompt): this route decodes from embeddings; text goes to /v1/chat/completions",
                       param="prompt_embeds")
    if "prompt" in body:
        raise ApiError(400, "send prompt_embeds or prompt, not both", param="prompt")
    import io

    import torch

    try:
        buf = io.BytesIO(base64.b64decode(data, validate=True))
        embeds = torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ApiError(400, f"prompt_embeds is not base64 of a torch.save'd tensor: {type(e).__name__}",
                       param="prompt_embeds") from None
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2 or not embeds.is_floating_point() or not embeds.shape[0]:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ApiError(400, f"prompt_embeds must be one non-empty (tokens, hidden) float tensor, not {shape}",
                       param="prompt_embeds")
    if not bool(torch.isfinite(embeds).all()):
        raise ApiError(400, "prompt_embeds holds NaN or Inf", param="prompt_embeds")
    return EmbedsRequest(embeds, asked, stop)


# ---------------------------------------------------------------------------------------------
# Prompt tokens: the limit, the lanes and `usage`

def estimate_tokens(request: Request) -> int:
    """A system without a tokenizer: ~4 UTF-8 bytes a token (BPE on English text), 12.5 a second of
    audio (an 80 ms embedding), a few for each message's template."""
    turns = (*request.history, request.turn)
    text = sum(len((t.text or "").encode()) for t in turns) + len((request.instruction or "").encode())
    audio = sum(t.audio.seconds for t in turns if t.spoken)
    return math.ceil(text / 4 + audio * 12.5) + 4 * (len(turns) + 1)


class PromptTokens:
    """How many prompt tokens a request costs the served system, counted in the connection thread
    before it is queued: `System.prompt_counter()` where the system has one (its tokenizer), else
    `estimate_tokens`. `context`: the model's context, where known."""

    def __init__(self, system: System):
        counter = system.prompt_counter() if hasattr(system, "prompt_counter") else None
        self.count: Callable[[Request], int] = counter[0] if counter else estimate_tokens
        self.context: int | None = counter[1] if counter else None
        self.exact = counter is not None

    def limit(self, max_prompt_tokens: int | None, max_new_tokens: int) -> int:
        """The prompt limit: `max_prompt_tokens` where given, else the model's context less the answer
        (8192 where the context is unknown)."""
        return max_prompt_tokens or max(1, (self.context - max_new_tokens) if self.context else 8192)

    def of(self, request: Any, limit: int) -> int:
        """The prompt tokens of a parsed request (a chat Request, or a (T, hidden) embeddings tensor),
        refused (400) over `limit`."""
        embeds = hasattr(request, "shape")
        n = int(request.shape[0]) if embeds else self.count(request)
        if n > limit:
            raise ApiError(400, f"the prompt is {n} tokens{'' if self.exact or embeds else ' (estimated)'}, over "
                           f"this server's limit of {limit} (serve --max-prompt-tokens)", code="context_length_exceeded",
                           param="prompt_embeds" if embeds else "messages")
        return n


# ---------------------------------------------------------------------------------------------
# Responses

def _usage(prompt_tokens: int, gen: Generation) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": gen.tokens, "total_tokens": prompt_tokens + gen.tokens}


def _finish(gen: Generation, max_new_tokens: int) -> str:
    return "length" if gen.tokens >= max_new_tokens else "stop"  # (a shorter max_tokens asked: see `respond`)


def text_completion(gen: Generation, prompt_tokens: int, model: str, fingerprint: str, system: str,
                    max_new_tokens: int) -> dict:
    """A text_completion response for one generation (the /v1/completions route)."""
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "text": gen.text, "logprobs": None, "finish_reason": _finish(gen, max_new_tokens)}],
            "usage": _usage(prompt_tokens, gen)}


def completion(gen: Generation, prompt_tokens: int, model: str, fingerprint: str, system: str,
               max_new_tokens: int) -> dict:
    """A chat.completion response for one generation (the transcript in the `audiochat` extension)."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text}, "logprobs": None,
                         "finish_reason": _finish(gen, max_new_tokens)}],
            "usage": _usage(prompt_tokens, gen),
            "audiochat": {"transcript": gen.transcript, "seconds": gen.seconds, "system": system}}
