"""`audiochat-bench serve --system NAME`: any system of this harness behind an OpenAI-compatible
`POST /v1/chat/completions` (audio in as `input_audio` parts) and `GET /v1/models`, so that other
harnesses, and this one's `openai` system, can evaluate it.

    audiochat-bench serve --system audiochatllama --port 8000
    audiochat-bench run --systems openai --tasks spoken-qa --system-args 'openai:model=audiochatllama,base_url=http://127.0.0.1:8000/v1'

Request → harness: leading system (or developer) messages become the instruction, the last message
(a user one) the turn, everything between the history. A user message is either text (a string or
`text` parts) or exactly one `input_audio` part `{data: BASE64, format: wav|flac|ogg|mp3}`, decoded in
memory, mixed down and resampled to 16 kHz. Nothing in a request is ever read as a file or fetched
as a URL: audio that looks like a path or URL is refused.

`POST /v1/completions` with `prompt_embeds` (vLLM's route, `--enable-prompt-embeds`), where the served
system decodes from embeddings (`text`: its chat LLM): the whole templated prompt as a (tokens, hidden)
tensor, base64 of `torch.save`; `audiochatllama:server=URL` sends its prompts so (encoder and bridge
local, the frozen LLM's decode on the server).

Response: a standard `chat.completion` with `system_fingerprint` = the system's fingerprint (its
weights and decoding), plus one extension, `audiochat: {transcript, seconds, system}`: the system's
own reading of the spoken turn (the cascade's ASR hypothesis; null where it has none), which the
`openai` client puts in `Generation.transcript`. A request may carry `audiochat: {transcript_only:
true}` (the `asr` task's requests, from the `openai` client once `GET /v1/models` lists the extension):
only that reading is wanted, so a cascade skips its LLM, as it does in a local run.

Decoding is what the harness does everywhere: greedy, `--max-new-tokens` per answer. A request may
omit `temperature`, `top_p` and `max_tokens` or send the served values (0, 1, `--max-new-tokens`);
anything else is refused (400) rather than answered with a decode it did not ask for, because a
cached or reported number must say how it was decoded.

Batching: requests are queued and one worker thread answers up to `--max-batch` of them per
`generate_batch` call, gathering for `--batch-wait-ms` after the first (and while requests that
have arrived are still being read), so concurrent clients get the throughput of a batched run.
Systems are used from that one thread only (ChatLLM is not thread-safe). A full queue
(`--max-queue`) answers 429; a system error on one request 500 (400 if the system says the input
cannot be answered: ValueError), and the batch-mates still get their answers.

The standard library's ThreadingHTTPServer, not FastAPI: no dependency added to a harness that
installs offline, the server's work is one JSON POST per answer next to a model call of tenths of a
second or more (measured: scripts/bench_serve.py), and limits stay explicit in this file. Bound to
127.0.0.1 by default and without authentication: put it behind a proxy to expose it.
"""
from __future__ import annotations

import base64
import binascii
import json
import queue
import re
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.types import AudioError, Generation, Request, System, Turn

AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
# Audio "data" that is a URL (file:, http:, data:, s3:...; base64 has no ':') or, when it is not valid
# base64 either, a path. Only for a clear message: nothing from a request is ever opened or fetched.
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:")
_PATH = re.compile(r"^\s*(/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\])")


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        kind = ("invalid_request_error" if self.status < 500 and self.status != 429
                else "rate_limit_error" if self.status == 429 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 25 * 2 ** 20
    max_audio_seconds: float = 120.0


# ---------------------------------------------------------------------------------------------
# OpenAI request ↔ harness request

def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "\n".join(str(p.get("text", "")) for p in content)
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
        raise ApiError(400, f"{where}: audio format {fmt!r} is not one of {', '.join(AUDIO_FORMATS)}", param=where)
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
        return load_audio(raw, max_seconds=limits.max_audio_seconds, origin=where)
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
            raise ApiError(400, f"{where}[{k}]: part type {kind!r} is not supported; send text or input_audio"
                           + hint, param=where)
    audio = [p for p in content if p["type"] == "input_audio"]
    if not audio:
        return Turn("user", text=_text_of(content, where))
    if len(audio) > 1 or len(audio) != len(content):
        raise ApiError(400, f"{where}: a user message is either text or exactly one input_audio part (a spoken "
                       "turn); put instructions in a system message and further speech in further user messages",
                       param=where)
    return Turn("user", audio=_audio_of(audio[0], f"{where}[0]", limits))


def _check_decoding(body: Any, model: str, max_new_tokens: int) -> None:
    """The checks every completion body passes: a JSON object, for the served model, greedy, one answer
    of the served length."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if "model" not in body:
        raise ApiError(400, f"missing 'model': this server serves {model!r}", param="model")
    if body["model"] != model:
        raise ApiError(404, f"model {body['model']!r} is not served here; this server serves {model!r} "
                       "(GET /v1/models)", code="model_not_found", param="model")
    if body.get("stream"):
        raise ApiError(400, "streaming is not supported: send stream false", param="stream")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1 (greedy decoding has one answer)", param="n")
    if body.get("temperature") not in (None, 0, 0.0):
        raise ApiError(400, "this server decodes greedily only: send temperature 0 or omit it", param="temperature")
    if body.get("top_p") not in (None, 1, 1.0):
        raise ApiError(400, "this server decodes greedily only: send top_p 1 or omit it", param="top_p")
    for key in ("max_tokens", "max_completion_tokens"):
        if body.get(key) is not None and body[key] != max_new_tokens:
            raise ApiError(400, f"{key}={body[key]!r}: this server answers with at most {max_new_tokens} tokens "
                           f"(serve --max-new-tokens); send {max_new_tokens} (run --max-new-tokens {max_new_tokens}) "
                           "or omit it", param=key)


def parse_chat(body: Any, model: str, max_new_tokens: int, limits: Limits) -> Request:
    """The harness request of an OpenAI chat-completions body (ApiError, with its HTTP status, if not)."""
    _check_decoding(body, model, max_new_tokens)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    instruction: list[str] = []
    turns: list[Turn] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"{where}: role {role!r} is not one of system, developer, user, assistant",
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
    return Request(turns[-1], tuple(turns[:-1]), "\n".join(instruction) or None, transcript_only=only)


def parse_embeds(body: Any, model: str, max_new_tokens: int, limits: Limits):
    """The (T, hidden) prompt embeddings of a completions body with vLLM's `prompt_embeds` (base64 of
    `torch.save`; read with `weights_only`, so it can hold tensors and nothing that runs)."""
    _check_decoding(body, model, max_new_tokens)
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
    return embeds


def text_completion(gen: Generation, model: str, fingerprint: str, system: str, max_new_tokens: int) -> dict:
    """A text_completion response for one generation (the /v1/completions route)."""
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "text": gen.text, "logprobs": None,
                         "finish_reason": "length" if gen.tokens >= max_new_tokens else "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": gen.tokens, "total_tokens": gen.tokens}}


class FromEmbeds:
    """The served system's decoding from prompt embeddings (its `generate_from_embeds`), as what a
    `Batcher` answers with."""

    def __init__(self, system: System):
        self.system, self.name = system, system.name

    def generate_batch(self, embeds: list) -> list[Generation]:
        return self.system.generate_from_embeds(embeds)


def completion(gen: Generation, model: str, fingerprint: str, system: str, max_new_tokens: int) -> dict:
    """A chat.completion response for one generation (the transcript in the `audiochat` extension)."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text}, "logprobs": None,
                         "finish_reason": "length" if gen.tokens >= max_new_tokens else "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": gen.tokens, "total_tokens": gen.tokens},
            "audiochat": {"transcript": gen.transcript, "seconds": gen.seconds, "system": system}}


# ---------------------------------------------------------------------------------------------
# Micro-batching

class Batcher:
    """One worker thread answers queued requests in batches of up to `max_batch`."""

    def __init__(self, system: System, max_batch: int = 8, wait_s: float = 0.01, max_queue: int = 64):
        self.system, self.max_batch, self.wait_s = system, max(1, max_batch), max(0.0, wait_s)
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._arriving = 0  # requests being read or parsed: they will be queued in a moment
        self._lock = threading.Lock()
        self.batches: list[int] = []  # size of every batch answered (for tests and benchmarks)
        self._worker = threading.Thread(target=self._loop, name="serve-batcher", daemon=True)
        self._worker.start()

    def arriving(self, delta: int) -> None:
        with self._lock:
            self._arriving += delta

    def submit(self, request: Request) -> Future:
        fut: Future = Future()
        try:
            self._queue.put_nowait((request, fut))
        except queue.Full:
            raise ApiError(429, "the server's queue is full; retry after a moment", code="queue_full") from None
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _gather(self, first) -> list:
        batch, deadline = [first], time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            # past the window, wait only for requests already being read, and not for ever (a client
            # that stalls mid-body must not hold the batch)
            if left <= 0 and ((self._arriving == 0 and self._queue.empty()) or -left > 0.1 + 10 * self.wait_s):
                break
            try:
                item = self._queue.get(timeout=max(left, 0.002))
            except queue.Empty:
                continue
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = self._gather(first)
            self.batches.append(len(batch))
            requests = [r for r, _ in batch]
            try:
                gens = self.system.generate_batch(requests)
                if len(gens) != len(requests):
                    raise RuntimeError(f"{self.system.name} returned {len(gens)} outputs for {len(requests)} requests")
                for (_, fut), g in zip(batch, gens):
                    fut.set_result(g)
            except Exception as e:
                if len(batch) == 1:
                    batch[0][1].set_exception(e)
                    continue
                for r, fut in batch:  # one by one, so that a bad request fails alone
                    try:
                        fut.set_result(self.system.generate_batch([r])[0])
                    except Exception as e1:
                        fut.set_exception(e1)


# ---------------------------------------------------------------------------------------------
# HTTP

class Server(ThreadingHTTPServer):
    """The HTTP server around one system. `start()` serves from a background thread (tests);
    `serve_forever()` from this one (the command)."""

    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent clients must not wait on SYN retries

    def __init__(self, system: System, model: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                 limits: Limits = Limits(), max_new_tokens: int = 64, max_batch: int = 8,
                 batch_wait_ms: float = 10.0, max_queue: int = 64):
        self.system, self.model = system, model or system.name
        self.limits, self.max_new_tokens = limits, max_new_tokens
        self.fingerprint = system.fingerprint()
        self.created = int(time.time())
        self.batcher = Batcher(system, max_batch, batch_wait_ms / 1000, max_queue)
        # POST /v1/completions with prompt_embeds, where the system decodes from embeddings (an LLM system)
        self.embeds_batcher = (Batcher(FromEmbeds(system), max_batch, batch_wait_ms / 1000, max_queue)
                               if hasattr(system, "generate_from_embeds") else None)
        super().__init__((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="serve-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for b in (self.batcher, self.embeds_batcher):
            if b is not None:
                b.close()

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model, "object": "model", "created": self.created, "owned_by": "audiochat-bench",
            "audiochat": {"system": self.system.name, "fingerprint": self.fingerprint,
                          "max_new_tokens": self.max_new_tokens, "max_audio_seconds": self.limits.max_audio_seconds,
                          "max_body_bytes": self.limits.max_body_bytes, "audio_formats": list(AUDIO_FORMATS),
                          "extensions": ["transcript_only"]}}]}


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "audiochat-bench"
    timeout = 120  # seconds a client may take to send its request

    def log_message(self, fmt, *args) -> None:  # errors only (see _send), not an access log
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left; its answer is dropped

    def _error(self, e: ApiError) -> None:
        if e.status >= 500:
            print(f"serve: {self.command} {self.path} → {e.status}: {e.message}", file=sys.stderr)
        self._send(e.status, e.body())

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        models = self.server.models()
        if path == "/v1/models":
            self._send(200, models)
        elif path == f"/v1/models/{self.server.model}":
            self._send(200, models["data"][0])
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            self._error(ApiError(404, f"no such endpoint GET {path}: try /v1/models"))

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        routes = {"/v1/chat/completions": (self.server.batcher, parse_chat, completion),
                  "/v1/completions": (self.server.embeds_batcher, parse_embeds, text_completion)}
        if path not in routes:
            self._error(ApiError(404, f"no such endpoint POST {path}: try /v1/chat/completions"))
            return
        batcher, parse, respond = routes[path]
        if batcher is None:
            self._error(ApiError(404, f"{self.server.system.name} does not decode from prompt embeddings: POST "
                                 "/v1/completions needs a server of an LLM system (serve --system text)"))
            return
        batcher.arriving(+1)
        queued = False
        try:
            request = parse(self._body(), self.server.model, self.server.max_new_tokens, self.server.limits)
            fut = batcher.submit(request)
            queued = True
            batcher.arriving(-1)
            try:
                gen = fut.result()
            except (ValueError, AudioError) as e:  # the system says this input cannot be answered
                raise ApiError(400, f"{self.server.system.name} cannot answer this request: {e}",
                               code="unanswerable") from None
            except Exception as e:
                raise ApiError(500, f"{self.server.system.name} failed: {type(e).__name__}: {e}") from None
            self._send(200, respond(gen, self.server.model, self.server.fingerprint, self.server.system.name,
                                    self.server.max_new_tokens))
        except ApiError as e:
            self._error(e)
        finally:
            if not queued:
                batcher.arriving(-1)

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ApiError(411, "send a Content-Length (chunked bodies are not accepted)")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise ApiError(411, "send a Content-Length header") from None
        limit = self.server.limits.max_body_bytes
        if n > limit:
            self.close_connection = True
            left = n if n <= 8 * limit else 0  # read what a client sends before it reads the answer
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                left -= len(chunk)
            raise ApiError(413, f"the body is {n} bytes, over this server's limit of {limit} "
                           "(serve --max-body-mb raises it)", code="request_too_large")
        try:
            return json.loads(self.rfile.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}") from None


# ---------------------------------------------------------------------------------------------
# The command

def add_parser(sub) -> None:
    import argparse

    from bench.options import add_model_options

    s = sub.add_parser("serve", help="serve a system behind an OpenAI-compatible /v1/chat/completions (audio in)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--system", required=True, help="the system to serve (see `list`), e.g. audiochatllama")
    s.add_argument("--model-name", help="the model name clients send (default: the system name)")
    s.add_argument("--llm", help="chat LLM: an embedded name (smollm2), a transformers model id or a local path")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    s.add_argument("--device", default="cpu", help="torch device (default cpu)")
    s.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (default 64, as `run`)")
    s.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    add_model_options(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--max-body-mb", type=float, default=25.0, help="largest request body (default 25 MB) → else 413")
    s.add_argument("--max-audio-seconds", type=float, default=120.0, help="longest audio clip (default 120) → else 400")
    s.add_argument("--max-batch", type=int, default=8, help="requests per generate_batch call (default 8; as "
                   "`run --batch-size` for the same batches as a direct run)")
    s.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch gathers after its first "
                   "request (default 10 ms)")
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting at most (default 64) → else 429")
    s.add_argument("--no-warmup", action="store_true", help="skip the typed warm-up request before serving")


def cmd_serve(args) -> int:
    from bench.options import system_args_of
    from bench.plugins import Context, build_system

    ctx = Context(llm=args.llm, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens,
                  trust_remote_code=args.trust_remote_code)
    system = build_system(args.system, ctx, system_args_of(args).get(args.system, {}))
    if not args.no_warmup:  # load the weights now, not in the first client's timeout
        try:
            system.generate_batch([Request(Turn("user", text="Hello."))])
        except Exception as e:
            print(f"serve: warm-up request failed ({type(e).__name__}: {e}); serving anyway", file=sys.stderr)
    server = Server(system, args.model_name, args.host, args.port,
                    Limits(int(args.max_body_mb * 2 ** 20), args.max_audio_seconds), args.max_new_tokens,
                    args.max_batch, args.batch_wait_ms, args.max_queue)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve: warning: bound to {args.host} with no authentication: anyone who can reach it can use it",
              file=sys.stderr)
    print(f"serving {args.system} as model {server.model!r} at {server.url} (fingerprint {server.fingerprint}); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.batcher.close()
    return 0
