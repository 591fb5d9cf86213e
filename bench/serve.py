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

Batching: requests are queued and a worker thread answers up to `--max-batch` of them per
`generate_batch` call, gathering for `--batch-wait-ms` after the first (and while requests that
have arrived are still being read), so concurrent clients get the throughput of a batched run.
A system instance is used from one worker thread only (ChatLLM is not thread-safe). A full queue
(`--max-queue`) answers 429; a system error on one request 500 (400 if the system says the input
cannot be answered: ValueError), and the batch-mates still get their answers. A prompt over
`--long-prompt-tokens` waits in a lane of its own, answered alone by a worker with a second instance
of the system (the same arguments: its weights twice in memory), so short requests are answered while
a long one decodes; `--no-long-lane-worker` saves that memory, and a long prompt decoding on the one
worker then holds the short requests behind it.

Limits, all checked before any model work (bench/serve_api.py): the Host header must name this machine
(loopback names and the bound address; `--allow-host` adds one) and a POST must be
`application/json`, which a page on another origin can send only after a CORS preflight this server
never grants (so DNS rebinding and cross-site forms get 403/415); one Content-Length of digits, at most
`--max-body-mb` (413), no Transfer-Encoding (411); JSON within the parser's depth, valid Unicode; audio
within `--max-audio-seconds` and 120 s of 48 kHz stereo in samples, read from the file's header before
decoding (two decodes at a time); a prompt within `--max-prompt-tokens` (default: the model's context
less `--max-new-tokens`), counted with the system's tokenizer, which `usage.prompt_tokens` reports. A
full queue, the requests being read included, answers 429 with Retry-After. Every error, the HTTP
layer's own included, is an OpenAI error body; a system's failure is logged, never sent.

The standard library's ThreadingHTTPServer, kept after measuring it against the stack vLLM and SGLang
use (issue 40; scripts/serve_asgi.py serves the same routes, parser, limits and batcher on Starlette 1.10
+ uvicorn 0.54 with h11): (1) speed is a tie: `scripts/bench_serve.py --server stdlib|asgi`, 2 shared
cores, one thread, text system on 16 typed-qa items: 0.76 vs 0.82 items/s at concurrency 1 and 2.11 vs
2.27 at 8, while the direct runs beside them moved by as much (0.91 / 0.79, 1.97 / 2.34); with no model
(`--system fake --limit 200`, best of 3, twice) 151 / 153 vs 133 / 137 items/s at 1 and 1,162 / 1,232
vs 1,249 / 1,143 at 8. (2) Out of the box the ASGI stack failed probes this server now passes
(scripts/serve_probes.py): uvicorn answers a negative Content-Length and a garbled request line with its
own plain-text 400, which an application cannot reshape into an OpenAI error; Starlette's host check
answers plain text; a 70 KB header was answered 200 and a 70 KB path 404 (no 431, no 414). (3) The
limits that matter here (audio frames, prompt tokens, lanes, JSON depth and surrogates, content type,
Retry-After, usage) are this project's code on either stack, and the standard library adds no
dependency (starlette, uvicorn, anyio, h11, click) to a harness that installs offline. The HTTP layer's
own duties are done and tested here instead: body framing, method handling, JSON on every error
(`send_error`), a lingering close after a refused body. Bound to 127.0.0.1 by default and without
authentication: put it behind a proxy to expose it (README, Security).
"""
from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.serve_api import (AUDIO_FORMATS, LOOPBACK_HOSTS, ApiError, Limits, PromptTokens, body_length,
                             check_content_type, check_host, completion, parse_chat, parse_embeds, parse_json,
                             text_completion)
from bench.serve_batch import Batcher
from bench.types import AudioError, Generation, Request, System, Turn

__all__ = ["ApiError", "Batcher", "Limits", "Server", "parse_chat", "parse_embeds"]


class Exclusive:
    """One instance of the served system as a `Batcher` uses it: its chat decoding (`generate_batch`)
    or, with `embeds`, its decoding from prompt embeddings (`generate_from_embeds`), under the
    instance's lock, which the chat and the prompt-embeds batchers share (a system is not thread-safe,
    and each batcher has its own worker)."""

    def __init__(self, system: System, lock: threading.Lock, embeds: bool = False):
        self.system, self.name, self.lock = system, system.name, lock
        self._generate = self._from_embeds if embeds else system.generate_batch

    def _from_embeds(self, requests: list) -> list[Generation]:
        return self.system.generate_from_embeds([r.embeds for r in requests],
                                                [(r.max_new_tokens, r.stop) for r in requests])

    def generate_batch(self, batch: list) -> list[Generation]:  # (Request, or EmbedsRequest with `embeds`)
        with self.lock:
            return self._generate(batch)


# ---------------------------------------------------------------------------------------------
# HTTP

class Server(ThreadingHTTPServer):
    """The HTTP server around one system. `start()` serves from a background thread (tests);
    `serve_forever()` from this one (the command). `errors`: exceptions that escaped a handler
    (each logged with its traceback; none is expected). `long_system`: a second instance of the
    system, built the same way, that decodes prompts over `limits.long_prompt_tokens` on a worker of
    its own (see `Batcher`)."""

    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent clients must not wait on SYN retries

    def __init__(self, system: System, model: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                 limits: Limits = Limits(), max_new_tokens: int = 64, max_batch: int = 8,
                 batch_wait_ms: float = 10.0, max_queue: int = 64, long_system: System | None = None):
        self.system, self.model = system, model or system.name
        self.max_new_tokens = max_new_tokens
        self.fingerprint = system.fingerprint()
        if long_system is not None and long_system.fingerprint() != self.fingerprint:
            # an answer must not depend on which lane its prompt's length sent it to
            raise ValueError(f"the long lane's system ({long_system.fingerprint()}) is not the same as the served "
                             f"one ({self.fingerprint}): build both from the same arguments")
        self.created = int(time.time())
        self.prompt_tokens = PromptTokens(system)
        self.max_prompt_tokens = self.prompt_tokens.limit(limits.max_prompt_tokens, max_new_tokens)
        # a bound address that is not a wildcard can only be reached by that name (an IP literal cannot
        # be rebound), so it is allowed too
        extra = (host.lower().strip("[]"),) if host not in ("0.0.0.0", "::", "") else ()
        self.limits = replace(limits, allowed_hosts=tuple(dict.fromkeys(limits.allowed_hosts + extra)))
        self.errors = 0
        wait = batch_wait_ms / 1000
        long = self.limits.long_prompt_tokens
        locks = {id(s): threading.Lock() for s in (system, long_system) if s is not None}

        def exclusive(s, embeds=False):
            return Exclusive(s, locks[id(s)], embeds) if s is not None else None

        self.batcher = Batcher(exclusive(system), max_batch, wait, max_queue, long, exclusive(long_system))
        # POST /v1/completions with prompt_embeds, where the system decodes from embeddings (an LLM system)
        self.embeds_batcher = (Batcher(exclusive(system, True), max_batch, wait, max_queue, long,
                                       exclusive(long_system, True))
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

    def handle_error(self, request, client_address) -> None:
        self.errors += 1
        print(f"serve: unexpected error on a connection from {client_address[0]}:\n{traceback.format_exc()}",
              file=sys.stderr)

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model, "object": "model", "created": self.created, "owned_by": "audiochat-bench",
            "audiochat": {"system": self.system.name, "fingerprint": self.fingerprint,
                          "max_new_tokens": self.max_new_tokens, "max_audio_seconds": self.limits.max_audio_seconds,
                          "max_body_bytes": self.limits.max_body_bytes, "max_prompt_tokens": self.max_prompt_tokens,
                          "audio_formats": list(AUDIO_FORMATS), "extensions": ["transcript_only"]}}]}


class Handler(BaseHTTPRequestHandler):
    """GET and POST as routed below; every other method, and every error the standard library itself
    answers (a malformed request line, 414, 431, 501), in OpenAI's JSON error shape."""

    server: Server
    server_version = "audiochat-bench"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # so that even an answer to a garbled request line has a status line
    timeout = 120  # seconds a client may take to send its request
    allow = "GET, POST"

    def log_message(self, fmt, *args) -> None:  # errors only (see _error), not an access log
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if status >= 400:
                self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left; its answer is dropped

    def _error(self, e: ApiError) -> None:
        if e.status >= 500:
            # (command and path are unset when the request line itself was refused)
            print(f"serve: {getattr(self, 'command', None)} {getattr(self, 'path', '')[:200]} → {e.status}: "
                  f"{e.message}", file=sys.stderr)
        self.close_connection = True
        headers = getattr(self, "headers", None)  # (None: the request line itself was refused)
        self._linger = bool(headers is not None and not getattr(self, "_body_read", False)
                            and (headers.get("Content-Length") or headers.get("Transfer-Encoding")))
        self._send(e.status, e.body(), e.headers)

    def finish(self) -> None:
        super().finish()
        if getattr(self, "_linger", False):
            # A refused body was left unread, and closing on unread bytes resets the connection, which can
            # destroy the answer before the client reads it: stop writing, then drop what still comes
            # (2 s at most) before closing (Apache's "lingering close").
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(0.5)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and self.connection.recv(1 << 16):
                    pass
            except OSError:
                pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (bad request line, 414, 431, 501), as JSON."""
        self._error(ApiError(code, message or self.responses.get(code, ("error",))[0],
                             code="unsupported_method" if code == 501 else None,
                             headers={"Allow": self.allow} if code in (405, 501) else None))

    def _route(self, handle) -> None:
        try:
            check_host(self.headers.get("Host"), self.server.limits.allowed_hosts)
            handle(self.path.split("?")[0].rstrip("/"))
        except ApiError as e:
            self._error(e)
        except Exception as e:  # a bug: logged with its traceback, answered without internals
            self.server.errors += 1
            print(f"serve: {self.command} {self.path[:200]} failed:\n{traceback.format_exc()}", file=sys.stderr)
            self._error(ApiError(500, f"internal server error ({type(e).__name__}; logged on the server)"))

    def do_GET(self) -> None:
        self._route(self._get)

    def do_POST(self) -> None:
        self._route(self._post)

    def _not_allowed(self) -> None:
        def refuse(path: str) -> None:
            raise ApiError(405, f"method {self.command} is not allowed here: this server answers GET and POST",
                           code="method_not_allowed", headers={"Allow": self.allow})

        self._route(refuse)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _not_allowed

    def _get(self, path: str) -> None:
        models = self.server.models()
        if path == "/v1/models":
            self._send(200, models)
        elif path == f"/v1/models/{self.server.model}":
            self._send(200, models["data"][0])
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        else:
            raise ApiError(404, f"no such endpoint GET {path[:200]}: try /v1/models")

    def _post(self, path: str) -> None:
        routes = {"/v1/chat/completions": (self.server.batcher, parse_chat, completion),
                  "/v1/completions": (self.server.embeds_batcher, parse_embeds, text_completion)}
        if path not in routes:
            raise ApiError(404, f"no such endpoint POST {path[:200]}: try /v1/chat/completions")
        batcher, parse, respond = routes[path]
        if batcher is None:
            raise ApiError(404, f"{self.server.system.name} does not decode from prompt embeddings: POST "
                           "/v1/completions needs a server of an LLM system (serve --system text)")
        check_content_type(self.headers.get("Content-Type"))
        n = body_length(self.headers.get_all("Content-Length") or [], self.headers.get("Transfer-Encoding"),
                        self.server.limits.max_body_bytes)
        srv = self.server
        batcher.admit()
        try:
            request = parse(parse_json(self._read(n)), srv.model, srv.max_new_tokens, srv.limits)
            tokens = srv.prompt_tokens.of(request, srv.max_prompt_tokens)
        except BaseException:
            batcher.leave()
            raise
        fut = batcher.submit(request, tokens)
        try:
            gen = fut.result()
        except (ValueError, AudioError) as e:  # the system says this input cannot be answered
            raise ApiError(400, f"{srv.system.name} cannot answer this request: {_plain(e)}",
                           code="unanswerable") from None
        except Exception as e:  # the system failed: its details go to the log, not to the client
            print(f"serve: {srv.system.name} failed on a request: {type(e).__name__}: {e}", file=sys.stderr)
            raise ApiError(500, f"{srv.system.name} failed ({type(e).__name__}; logged on the server)") from None
        self._send(200, respond(gen, tokens, srv.model, srv.fingerprint, srv.system.name, srv.max_new_tokens))

    def _read(self, n: int) -> bytes:
        self._body_read = True
        try:
            data = self.rfile.read(n)
        except OSError:  # (a timeout: the client stopped sending)
            raise ApiError(408, f"the body did not arrive within {self.timeout} s") from None
        if len(data) < n:
            raise ApiError(400, f"the body ended after {len(data)} of its {n} bytes (Content-Length)")
        return data


def _plain(e: Exception) -> str:
    """An exception's message without object reprs (`<… at 0x…>`): no internals in an answer."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<object>", str(e))[:500]


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
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting or being read at most (default 64) → "
                   "else 429")
    s.add_argument("--max-prompt-tokens", type=int, help="longest prompt in tokens (default: the model's context less "
                   "--max-new-tokens; 8192 for a system without a tokenizer) → else 400")
    s.add_argument("--long-prompt-tokens", type=int, default=1024, help="prompts over this wait in their own lane, "
                   "answered alone (default 1024)")
    s.add_argument("--long-lane-worker", action=argparse.BooleanOptionalAction, default=True,
                   help="answer the long lane on a worker of its own, with a second copy of the system (its weights "
                   "twice in memory), so short requests are answered while a long prompt decodes (default); "
                   "--no-long-lane-worker: one copy, and a long prompt being decoded holds every request behind it")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="a Host name to answer besides "
                   "localhost, 127.0.0.1, ::1 and the bound address (repeatable; the name a proxy forwards; '*': any)")
    s.add_argument("--no-warmup", action="store_true", help="skip the typed warm-up request before serving")


def cmd_serve(args) -> int:
    from bench.options import system_args_of
    from bench.plugins import Context, build_system

    def build() -> System:  # a fresh Context each time: a second instance shares no model with the first
        ctx = Context(llm=args.llm, dtype=args.dtype, device=args.device, max_new_tokens=args.max_new_tokens,
                      trust_remote_code=args.trust_remote_code)
        return build_system(args.system, ctx, system_args_of(args).get(args.system, {}))

    system = build()
    long_system = build() if args.long_lane_worker else None
    for s in (system, long_system):
        if s is None or args.no_warmup:
            continue
        try:  # load the weights now, not in the first client's timeout
            s.generate_batch([Request(Turn("user", text="Hello."))])
        except Exception as e:
            print(f"serve: warm-up request failed ({type(e).__name__}: {e}); serving anyway", file=sys.stderr)
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2 ** 20), max_audio_seconds=args.max_audio_seconds,
                    max_prompt_tokens=args.max_prompt_tokens, long_prompt_tokens=args.long_prompt_tokens,
                    allowed_hosts=LOOPBACK_HOSTS + tuple(h.lower().strip("[]") for h in args.allow_host))
    server = Server(system, args.model_name, args.host, args.port, limits, args.max_new_tokens,
                    args.max_batch, args.batch_wait_ms, args.max_queue, long_system)
    if args.host not in LOOPBACK_HOSTS:
        print(f"serve: warning: bound to {args.host} with no authentication: anyone who can reach it can use it",
              file=sys.stderr)
    print(f"serving {args.system} as model {server.model!r} at {server.url} (fingerprint {server.fingerprint}; "
          f"prompts up to {server.max_prompt_tokens} tokens; over {args.long_prompt_tokens}: the long lane, "
          f"{'on a second copy of the system' if long_system is not None else 'on the same worker'}); Ctrl-C stops",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for b in (server.batcher, server.embeds_batcher):
            if b is not None:
                b.close()
    return 0
