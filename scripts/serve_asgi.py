"""The measured alternative to `serve`'s standard-library HTTP layer (issue 40): the same routes, the
same request parsing and limits (bench/serve_api.py) and the same micro-batcher, on Starlette + uvicorn
(the stack vLLM and SGLang serve their OpenAI API with). Not used by the harness: it exists so the
comparison in bench/serve.py's docstring can be rerun.

    pip install starlette==1.10.0 uvicorn==0.54.0
    python scripts/serve_asgi.py --system text --port 8001 [--max-new-tokens 32] [--fakes]
    python scripts/serve_probes.py http://127.0.0.1:8001        # the issue's probes
    python scripts/bench_serve.py --server asgi                   # items/s at concurrency 1 and 8
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.trustedhost import TrustedHostMiddleware  # noqa: E402
from starlette.requests import Request as HttpRequest  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bench.serve import Batcher  # noqa: E402
from bench.serve_api import (LOOPBACK_HOSTS, ApiError, Limits, PromptTokens, body_length,  # noqa: E402
                             check_content_type, completion, parse_chat, parse_json)
from bench.types import AudioError, Request, Turn  # noqa: E402


def build_app(system, max_new_tokens: int, limits: Limits = Limits(), max_batch: int = 8, max_queue: int = 64):
    batcher = Batcher(system, max_batch, 0.01, max_queue, limits.long_prompt_tokens)
    counter, model, fingerprint = PromptTokens(system), system.name, system.fingerprint()
    max_prompt = counter.limit(limits.max_prompt_tokens, max_new_tokens)

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    async def chat(request: HttpRequest):
        check_content_type(request.headers.get("content-type"))
        n = body_length(request.headers.getlist("content-length"), request.headers.get("transfer-encoding"),
                        limits.max_body_bytes)
        batcher.admit()
        try:
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > n:
                    raise ApiError(400, "the body is longer than its Content-Length")
            # parsing decodes audio: off the event loop
            req = await run_in_threadpool(lambda: parse_chat(parse_json(bytes(raw)), model, max_new_tokens, limits))
            tokens = counter.of(req, max_prompt)
        except BaseException:
            batcher.leave()
            raise
        try:
            gen = await asyncio.wrap_future(batcher.submit(req, tokens))
        except (ValueError, AudioError) as e:
            raise ApiError(400, f"{system.name} cannot answer this request: {e}", code="unanswerable") from None
        return JSONResponse(completion(gen, tokens, model, fingerprint, system.name, max_new_tokens))

    async def models(request: HttpRequest):
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "audiochat-bench"}]})

    async def http_error(request, exc: HTTPException):
        return error(ApiError(exc.status_code, str(exc.detail), headers=exc.headers))

    async def api_error(request, exc: ApiError):
        return error(exc)

    async def crash(request, exc: Exception):
        return error(ApiError(500, f"internal server error ({type(exc).__name__})"))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])],
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, "[::1]"])],
                     exception_handlers={HTTPException: http_error, ApiError: api_error, Exception: crash})


def main() -> int:
    import uvicorn

    from bench.plugins import Context, build_system

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="text")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--fakes", action="store_true", help="register the test fakes (--system fake)")
    args = ap.parse_args()
    if args.fakes:
        from tests.fakes import register

        register()
    system = build_system(args.system, Context(max_new_tokens=args.max_new_tokens))
    system.generate_batch([Request(Turn("user", text="Hello."))])  # warmed up, as serve's is
    app = build_app(system, args.max_new_tokens, max_batch=args.max_batch)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    print(f"serving {args.system} (asgi) at http://127.0.0.1:{args.port}/v1", flush=True)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
