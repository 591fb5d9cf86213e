"""`openai`: a model behind an OpenAI-compatible chat endpoint (vLLM, SGLang, a commercial API, or
`audiochat-bench serve`) as a system of this harness.

    audiochat-bench run --systems openai --system-args 'openai:model=NAME,base_url=http://127.0.0.1:8000/v1'

Each request is one `POST {base_url}/chat/completions`: the instruction as the system message, typed
turns as text, spoken turns as an `input_audio` part (wav, 32-bit float at the clip's own rate, so the
server hears exactly the samples a local system would), greedy (`temperature` 0) with the run's
`max_tokens`. The system's own reading of the spoken turn comes back, where the server gives one, in
the response's `audiochat.transcript` (what `serve` sends; see bench/serve.py). An ASR request
(`transcript_only`) says so in the request's `audiochat` extension where `GET {base_url}/models` lists
it (`serve` does; other servers get standard requests only).

Only the standard library (urllib, json, base64, concurrent.futures): no dependency added for what is
one JSON POST per request, and the same client runs on any machine the harness runs on.

The API key is read from the environment variable `api_key_env` names (default OPENAI_API_KEY) when
a request is sent, never from `--system-args`, so it is never in config.json, a cache key or an error
message. A server that needs no key (a local vLLM, `serve`) needs the variable unset or anything.

The fingerprint (cache identity) hashes base_url, model, `revision` and the decoding config: what a
server serves under a name is invisible from here, so change `revision=` (or the model name) when
the weights behind it change. Within one process, a change of the server's `system_fingerprint`
fails the items after it instead of mixing two models' outputs in one run.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from bench.plugins import Context, takes
from bench.types import Generation, Request, System, Turn

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """A request the endpoint refused or could not answer; the message says which and why."""


def wav_base64(turn: Turn) -> str:
    """The turn's audio as base64 wav (32-bit float: lossless, so the server hears these samples)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, turn.audio.samples, turn.audio.sample_rate, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def embeds_base64(embeds) -> str:
    """A (T, hidden) tensor of prompt embeddings as vLLM's `prompt_embeds` takes it: `torch.save`, base64."""
    import torch

    buf = io.BytesIO()
    torch.save(embeds.detach().cpu().contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(request: Request) -> list[dict]:
    """The request as OpenAI chat messages (spoken user turns as one `input_audio` part each)."""
    msgs = [{"role": "system", "content": request.instruction}] if request.instruction else []
    for t in (*request.history, request.turn):
        t = t.materialized()
        if t.role == "user" and t.spoken:
            if t.audio is None:
                raise ValueError("a spoken turn without audio cannot be sent to an endpoint")
            content = [{"type": "input_audio", "input_audio": {"data": wav_base64(t), "format": "wav"}}]
        else:
            content = t.gold_text
        msgs.append({"role": t.role, "content": content})
    return msgs


class OpenAIEndpoint(System):
    name = "openai"

    def __init__(self, model: str, base_url: str, max_new_tokens: int = 64, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 300.0, retries: int = 3, backoff: float = 1.0,
                 revision: str = ""):
        if not model or not base_url:
            raise ValueError("openai needs a model and an endpoint: --system-args "
                             "'openai:model=NAME,base_url=http://HOST:PORT/v1'")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"openai: base_url {base_url!r} must start with http:// or https://")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("openai: concurrency ≥ 1, retries ≥ 0, timeout > 0 and backoff ≥ 0, please")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.max_new_tokens, self.api_key_env, self.revision = max_new_tokens, api_key_env, revision
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, timeout, retries, backoff
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="openai")
        self._served: str | None = None  # the server's system_fingerprint, first seen
        self._lock = threading.Lock()
        self._ext: frozenset | None = None  # the server's `audiochat` request extensions, once asked
        # The last batch's outcome per request object: the runner retries a batch that raised one
        # request at a time, and each of those was already sent (and retried) once; see generate_batch.
        self._last: list[tuple[Request, Generation | BaseException]] = []

    def fingerprint(self) -> str:
        blob = json.dumps({"class": "OpenAIEndpoint/1", "base_url": self.base_url, "model": self.model,
                           "revision": self.revision, "max_new_tokens": self.max_new_tokens, "greedy": True},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- one request ------------------------------------------------------------------------------
    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def _post(self, body: bytes, path: str = "/chat/completions") -> dict:
        req = urllib.request.Request(f"{self.base_url}{path}", data=body, headers=self._headers(), method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise EndpointError(f"{req.full_url} answered with something other than JSON: {raw[:200]!r}") from None

    def _complete(self, request: Request) -> Generation:
        """One chat completion; an ASR request (`transcript_only`) says so where the server takes the
        `audiochat` extension (`serve`: a cascade then skips its LLM), and is sent plain elsewhere."""
        payload: dict = {"messages": to_openai_messages(request), **self._length(request.max_new_tokens, request.stop)}
        if request.transcript_only and "transcript_only" in self._extensions():
            payload["audiochat"] = {"transcript_only": True}
        return self._send(payload, "/chat/completions")

    def _length(self, max_new_tokens: int | None, stop: Sequence[str]) -> dict:
        """The answer length of a request (its task's, else this endpoint's cap) as OpenAI fields."""
        return {"max_tokens": self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                **({"stop": list(stop)} if stop else {})}

    def _extensions(self) -> frozenset:
        """The `audiochat` request extensions the served model lists in `GET {base_url}/models`, asked
        once (none where the server is not `serve` or does not answer: plain requests then)."""
        with self._lock:
            if self._ext is None:
                try:
                    req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers(), method="GET")
                    with urllib.request.urlopen(req, timeout=min(self.timeout, 30)) as resp:
                        models = json.loads(resp.read()).get("data") or []
                    ext = next(m.get("audiochat", {}).get("extensions", []) for m in models if m.get("id") == self.model)
                    self._ext = frozenset(ext)
                except Exception:  # noqa: BLE001 - a foreign or silent server: it gets standard requests
                    self._ext = frozenset()
        return self._ext

    def complete_embeds(self, embeds: Sequence, cfgs: Sequence | None = None) -> list[Generation]:
        """Completions of whole, already templated prompts given as input embeddings ((T, hidden)
        tensors): `POST {base_url}/completions` with `prompt_embeds` (base64 of `torch.save`), the
        route of vLLM's `--enable-prompt-embeds` and of `serve`; `cfgs`: each one's DecodeConfig (its
        answer length; default this endpoint's cap). Concurrent, like `generate_batch`; raises the first failure."""
        lengths = [self._length(None, ()) if c is None else self._length(c.max_new_tokens, c.stop)
                   for c in (cfgs or [None] * len(embeds))]
        futures = [self._pool.submit(self._send, {"prompt_embeds": embeds_base64(e), **n}, "/completions")
                   for e, n in zip(embeds, lengths)]
        return [f.result() for f in futures]

    def _send(self, payload: dict, path: str) -> Generation:
        """One greedy completion request, retried with exponential backoff on 429, 5xx and connection errors."""
        body = json.dumps({"model": self.model, "max_tokens": self.max_new_tokens, **payload, "temperature": 0,
                           "n": 1, "stream": False}).encode()
        url = f"{self.base_url}{path}"
        t0 = time.perf_counter()
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2 ** attempt * (1 + 0.1 * random.random())  # jitter: retries spread out
            try:
                reply = self._post(body, path)
                break
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code} from {url}: {_error_message(e)}"
                if e.code not in RETRY_STATUS:
                    raise EndpointError(reason) from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 60.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
                why = getattr(e, "reason", None) or e
                reason = f"cannot reach {url}: {type(why).__name__ if not str(why) else why}"
            if attempt == self.retries:
                raise EndpointError(f"{reason} (gave up after {self.retries + 1} attempts)")
            time.sleep(wait)
        return self._generation(reply, url, time.perf_counter() - t0)

    def _generation(self, reply: dict, url: str, seconds: float) -> Generation:
        try:
            choice = reply["choices"][0]
            text = (choice["message"].get("content") if "message" in choice else choice["text"]) or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EndpointError(f"{url} answered without choices[0].message or .text: {str(reply)[:200]}") from None
        served = reply.get("system_fingerprint")
        with self._lock:
            self._served = self._served or served
            if served and served != self._served:
                raise EndpointError(f"{url}: the server's system_fingerprint changed from {self._served} to {served} "
                                    "during the run: what it serves changed; rerun with a new openai:revision=")
        extra = reply.get("audiochat") or {}
        return Generation(text=text, transcript=extra.get("transcript"), seconds={"endpoint": seconds},
                          tokens=int((reply.get("usage") or {}).get("completion_tokens") or 0))

    # -- the batch -------------------------------------------------------------------------------
    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        """Every request sent concurrently (at most `concurrency` in flight). If any failed, this
        raises the first failure, and the runner then retries the batch one request at a time: those
        calls are answered from this batch's outcomes (its answer, or its own failure, already
        retried) rather than sent again, so each item ends with exactly its own result."""
        if len(requests) == 1:
            for r, outcome in self._last:
                if r is requests[0]:
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return [outcome]
        futures = [self._pool.submit(self._complete, r) for r in requests]
        outcomes: list[Generation | BaseException] = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except Exception as e:
                outcomes.append(e)
        self._last = list(zip(requests, outcomes)) if len(requests) > 1 else []
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        return outcomes  # type: ignore[return-value]


def _error_message(e: urllib.error.HTTPError) -> str:
    """The message of an OpenAI-style error body, else the start of the body, else the HTTP reason."""
    try:
        raw = e.read()
    except OSError:
        raw = b""
    try:
        return str(json.loads(raw)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip()[:300] or str(e.reason)


@takes(model="the model name the endpoint serves (required), e.g. text, or meta-llama/Llama-3.1-8B-Instruct",
       base_url="the endpoint's base URL up to /v1 (required), e.g. http://127.0.0.1:8000/v1",
       api_key_env="environment variable holding the API key (default OPENAI_API_KEY; the key itself is never "
                   "an argument, so it never reaches a run directory)",
       concurrency="requests in flight at once (default 8; at most --batch-size are ever pending)",
       timeout="seconds to wait for one response (default 300)",
       retries="retries on 429, 5xx and connection errors, with exponential backoff (default 3)",
       backoff="seconds before the first retry, doubled each time (default 1)",
       revision="a tag for what the endpoint serves, part of the cache identity: change it when the weights "
                "behind the same model name change")
def build(ctx: Context) -> OpenAIEndpoint:
    a = ctx.args

    def number(key: str, default: float, kind=int):
        try:
            return kind(a.get(key, default))
        except ValueError:
            raise ValueError(f"openai:{key}={a[key]!r} is not a number") from None

    return OpenAIEndpoint(a.get("model", ""), a.get("base_url", ""), int(ctx.options.get("max_new_tokens", 64)),
                          api_key_env=a.get("api_key_env", "OPENAI_API_KEY"), concurrency=number("concurrency", 8),
                          timeout=number("timeout", 300, float), retries=number("retries", 3),
                          backoff=number("backoff", 1.0, float), revision=a.get("revision", ""))
