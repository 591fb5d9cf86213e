"""Issue 40's probes, as raw HTTP, against any running server of model `--model` (`serve`, or
scripts/serve_asgi.py): prints one row per probe with the status and whether the answer was an
OpenAI JSON error; with `--pid` also the server's peak memory (VmHWM) after the FLAC bomb.

    python scripts/serve_probes.py --port 8000 [--model text] [--pid PID]
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_serve_limits import _chat, _flac_b64, _post, _raw  # noqa: E402  (the tests' own probes)


def _hwm_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _behind_long(port: int, model: str, short: bytes):
    """The short request's answer, sent 0.5 s after a long prompt (how long it waited: the note)."""
    long = threading.Thread(target=_post, args=(port, json.dumps(_chat("word " * 7200, model)).encode()),
                            kwargs={"timeout": 600})
    long.start()
    time.sleep(0.5)
    try:
        return _post(port, short, timeout=600)
    finally:
        long.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="text")
    ap.add_argument("--pid", type=int, help="the server's process id (for its peak memory)")
    args = ap.parse_args()
    port, m = args.port, args.model
    ok = json.dumps(_chat("What is the capital of France?", m)).encode()

    def req(line: str, extra: str = "", body: bytes = b"") -> bytes:
        return f"{line} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode() + body

    audio = {"type": "input_audio", "input_audio": {"data": _flac_b64(3600), "format": "flac"}}
    probes = [
        ("Content-Length: -1, 30 MiB body", lambda: _post(port, b"x" * (30 * 2 ** 20), length=-1)),
        ("180 KB FLAC of 60 min", lambda: _post(port, json.dumps(_chat([audio], m)).encode())),
        ("36 KB text prompt", lambda: _post(port, json.dumps(_chat("word " * 7200, m)).encode(), timeout=600)),
        ("a short request 0.5 s after a 36 KB prompt", lambda: _behind_long(port, m, ok)),
        ("100,000 [", lambda: _post(port, b"[" * 100_000)),
        ("lone UTF-16 surrogate", lambda: _post(port, b'{"model": "%s", "messages": [{"role": "user", "content": '
                                                      b'"\\ud800"}]}' % m.encode())),
        ("Host: evil.example", lambda: _post(port, ok, host="evil.example")),
        ("Content-Type: text/plain", lambda: _post(port, ok, content_type="text/plain")),
        ("PUT", lambda: _raw(port, req("PUT /v1/chat/completions", "Content-Length: 2\r\n", b"{}"))),
        ("DELETE", lambda: _raw(port, req("DELETE /v1/models"))),
        ("OPTIONS", lambda: _raw(port, req("OPTIONS /v1/chat/completions"))),
        ("HEAD", lambda: _raw(port, req("HEAD /v1/models"))),
        ("431 (a 70 KB header)", lambda: _raw(port, req("GET /v1/models", "X-Big: " + "b" * 70_000 + "\r\n"))),
        ("414 (a 70 KB path)", lambda: _raw(port, req("GET /" + "a" * 70_000))),
        ("garbled request line", lambda: _raw(port, b"NONSENSE\r\n\r\n")),
        ("not audio (internals?)", lambda: _post(port, json.dumps(_chat([{"type": "input_audio", "input_audio": {
            "data": "bm90IGF1ZGlv", "format": "wav"}}], m)).encode())),
        ("a normal request (usage)", lambda: _post(port, ok, timeout=600)),
    ]
    print("| probe | status | OpenAI JSON | note |\n|---|---|---|---|")
    for name, probe in probes:
        before, t0 = _hwm_mb(args.pid), time.perf_counter()
        try:
            status, headers, body = probe()
        except Exception as e:  # a server that never answers, or answers garbage
            print(f"| {name} | no answer ({type(e).__name__}) | - | |")
            continue
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        is_err = isinstance(data, dict) and isinstance(data.get("error"), dict) and "message" in data["error"]
        note = f"{time.perf_counter() - t0:.2f} s"
        if before is not None:
            note += f", peak +{_hwm_mb(args.pid) - before:.0f} MB"
        if status == 200 and isinstance(data, dict) and "usage" in data:
            note += f", usage.prompt_tokens {data['usage']['prompt_tokens']}"
        elif is_err:
            note += f": {data['error']['message'][:70]}"
        elif body:
            note += f": {body[:50]!r}"
        print(f"| {name} | {status} | {'yes' if is_err else 'no'} | {note} |")

    statuses: list[tuple[int, str | None]] = []

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/v1/chat/completions", ok, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        statuses.append((r.status, r.getheader("Retry-After")))

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    n429 = [r for s, r in statuses if s == 429]
    print(f"| 100 concurrent requests | {sum(s == 200 for s, _ in statuses)} × 200, {len(n429)} × 429 | | "
          f"Retry-After on {sum(r is not None for r in n429)} of the 429s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
