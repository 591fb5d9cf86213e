"""`serve` probed as an attacker would, on 127.0.0.1: every request below goes to a real server (a
thread on a free port) as raw bytes or through http.client, and must be refused before any work with
an OpenAI error body, or answered with what the limits promise (issue 40's table, row by row)."""
import base64
import http.client
import io
import json
import resource
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from bench.serve import Limits, Server
from bench.types import Generation, System


class Slow(System):
    """Answers with the prompt's length; a prompt over 1,000 characters takes 0.6 s, others 0.05 s;
    'BOOM' raises an error whose message holds an object's repr (an internal)."""

    name = "slow"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[str] = []  # every prompt, in the order answered

    def fingerprint(self):
        return "slow-1"

    def generate_batch(self, requests):
        self.seen.extend(r.turn.text or "" for r in requests)
        self.gate.wait(timeout=30)
        if any("BOOM" in (r.turn.text or "") for r in requests):
            raise RuntimeError(f"exploded in {object()!r} at /srv/secret/path")
        time.sleep(0.6 if any(len(r.turn.text or "") > 1000 for r in requests) else 0.05)
        return [Generation(str(len(r.turn.text or "")), tokens=1) for r in requests]


class Gated(System):
    """Answers with each prompt's size (characters, or rows of embeddings) and logs when it starts and
    ends a batch (`log`: (event, instance, sizes)); a long prompt (over 1,000 characters or 100 rows)
    sets `long_started`, then decodes until the test sets `release`."""

    name = "gated"

    def __init__(self, log: list, long_started: threading.Event, release: threading.Event):
        self.log, self.long_started, self.release = log, long_started, release

    def fingerprint(self):
        return "gated-1"

    def _answer(self, sizes: list[int], long: bool) -> list[Generation]:
        self.log.append(("start", self, sizes))
        if long:
            self.long_started.set()
            self.release.wait(timeout=30)
        self.log.append(("end", self, sizes))
        return [Generation(str(n), tokens=1) for n in sizes]

    def generate_batch(self, requests):
        sizes = [len(r.turn.text or "") for r in requests]
        return self._answer(sizes, max(sizes) > 1000)

    def generate_from_embeds(self, embeds, lengths=()):
        sizes = [int(e.shape[0]) for e in embeds]
        return self._answer(sizes, max(sizes) > 100)


def _serve(system=None, long_system=None, **limits):
    kw = {"max_body_bytes": 2 ** 20, "max_audio_seconds": 10.0, **limits}
    return Server(system or Slow(), port=0, limits=Limits(**kw), max_new_tokens=16, max_queue=8,
                  long_system=long_system).start()


@pytest.fixture
def server():
    s = _serve()
    yield s
    s.stop()
    assert s.errors == 0  # nothing escaped a handler (no traceback in the log)


def _chat(content, model="slow"):
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _raw(port: int, head: bytes, body: bytes = b"", timeout: float = 20) -> tuple[int, dict, bytes]:
    """Send a request as bytes (the body from a thread, so a server that answers early is still read)
    and read the whole answer: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)

        def send_body():
            try:
                s.sendall(body)
            except OSError:
                pass  # the server answered and stopped reading

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        data, headers, lines = b"", None, []
        while True:  # until the server closes, or the answer's Content-Length is in (a kept-alive connection)
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            data += chunk
            if headers is None and b"\r\n\r\n" in data:
                lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if not chunk or (headers is not None and "content-length" in headers and len(data.partition(
                    b"\r\n\r\n")[2]) >= int(headers["content-length"])):
                break
    return int(lines[0].split()[1]), headers or {}, data.partition(b"\r\n\r\n")[2]


def _post(port, body: bytes, content_type="application/json", host="127.0.0.1", extra=b"", length=None, timeout=20,
          path="/v1/chat/completions"):
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n").encode() + extra + b"\r\n"
    return _raw(port, head, body, timeout)


def _is_error(status, headers, body, code):
    assert status == code, (status, body[:300])
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# -- the body ----------------------------------------------------------------------------------

def test_negative_content_length_with_a_big_body_is_refused(server):
    port = server.server_address[1]
    err = _is_error(*_post(port, b"x" * (30 * 2 ** 20), length=-1), 400)
    assert "Content-Length" in err["message"]
    # the same body with its true length: over the limit (1 MiB here)
    err = _is_error(*_post(port, b"x" * (3 * 2 ** 20)), 413)
    assert "over this server's limit" in err["message"]
    for bad in ("+5", "5_0", "0x10", "5, 5"):
        _is_error(*_post(port, b"{}", length=bad), 400)
    _is_error(*_post(port, b"{}", extra=b"Transfer-Encoding: chunked\r\n"), 411)
    status, _, body = _post(port, json.dumps(_chat("ok")).encode())
    assert status == 200, body  # and the server still answers


def test_deep_nesting_and_lone_surrogates_are_400(server):
    port = server.server_address[1]
    err = _is_error(*_post(port, b"[" * 100_000), 400)
    assert "nested too deeply" in err["message"]
    body = b'{"model": "slow", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    err = _is_error(*_post(port, body), 400)
    assert "surrogate" in err["message"]
    _is_error(*_post(port, b'{"model": "slow", "messages": "\xff\xfe"}'), 400)  # not UTF-8


# -- who may ask --------------------------------------------------------------------------------

def test_foreign_host_and_non_json_content_type_are_refused():
    s = _serve(allowed_hosts=("localhost", "127.0.0.1", "::1", "bench.internal"))
    try:
        port, ok = s.server_address[1], json.dumps(_chat("hi")).encode()
        err = _is_error(*_post(port, ok, host="evil.example"), 403)
        assert err["code"] == "host_not_allowed"
        _is_error(*_raw(port, b"GET /v1/models HTTP/1.1\r\nHost: evil.example:8000\r\n\r\n"), 403)
        _is_error(*_post(port, ok, content_type="text/plain"), 415)
        _is_error(*_post(port, ok, content_type="application/x-www-form-urlencoded"), 415)
        for host in (f"127.0.0.1:{port}", "localhost", "[::1]:80", "bench.internal:443"):  # allowed names
            assert _post(port, ok, host=host)[0] == 200, host
        assert _post(port, ok, content_type="application/json; charset=utf-8")[0] == 200
    finally:
        s.stop()
    assert s.errors == 0


# -- every path and method answers JSON -----------------------------------------------------------

@pytest.mark.parametrize("request_bytes,status", [
    (b"PUT /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}", 405),
    (b"DELETE /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
    (b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n", 405),
    (b"BREW /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n", 501),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n" + b"X-H: 1\r\n" * 150 + b"\r\n", 431),
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /v1/models HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
    (b"GET /v1/models HTTP/1.x\r\nHost: localhost\r\n\r\n", 400),
    (b"GET /v1/models\r\n\r\n", 400),  # HTTP/0.9-style: no Host header
    (b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
])
def test_every_error_is_openai_json(server, request_bytes, status):
    got, headers, body = _raw(server.server_address[1], request_bytes)
    _is_error(got, headers, body, status)
    if status in (405, 501):
        assert headers["allow"] == "GET, POST"
    assert b"<html" not in body.lower() and "audiochat-bench" in headers["server"] and "Python" not in headers["server"]


def test_head_is_405_without_a_body(server):
    status, headers, body = _raw(server.server_address[1], b"HEAD /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 405 and headers["content-type"] == "application/json" and body == b""


# -- limits on the work --------------------------------------------------------------------------

def _flac_b64(seconds: float, header_length: bool = True) -> str:
    sr = 16000
    buf = io.BytesIO()
    sf.write(buf, np.full(int(seconds * sr), 0.25, np.float32), sr, format="FLAC", subtype="PCM_16")
    raw = bytearray(buf.getvalue())
    if not header_length:  # STREAMINFO's 36-bit total-samples field zeroed: "length unknown"
        bits = int.from_bytes(raw[18:26], "big") & ~((1 << 36) - 1)
        raw[18:26] = bits.to_bytes(8, "big")
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("header_length", [True, False], ids=["declared", "undeclared"])
def test_an_hour_of_flac_is_refused_before_decoding(header_length):
    s = _serve(max_body_bytes=25 * 2 ** 20)
    try:
        data = _flac_b64(3600, header_length)
        assert len(data) < 400_000  # a small upload…
        body = json.dumps(_chat([{"type": "input_audio", "input_audio": {"data": data, "format": "flac"}}])).encode()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        err = _is_error(*_post(s.server_address[1], body), 400)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert "over the 10 s limit" in err["message"], err
        assert ("3600.0 s long" in err["message"]) == header_length  # from the header, when it has one
        assert grown_mb < 100 and time.perf_counter() - t0 < 5  # …that never decodes into 230 MB of floats
    finally:
        s.stop()


def test_decoded_samples_are_bounded_by_channels_too():
    from bench.audio import load_audio
    from bench.types import AudioError

    buf = io.BytesIO()
    sf.write(buf, np.full((16000, 64), 0.25, np.float32), 16000, format="WAV", subtype="PCM_16")  # 1 s, 64 ch
    with pytest.raises(AudioError, match="64 channel.*before decoding"):
        load_audio(buf.getvalue(), max_seconds=10, max_samples=16000 * 8)
    assert load_audio(buf.getvalue(), max_seconds=10, max_samples=16000 * 64).seconds == pytest.approx(1.0)


def test_long_prompt_is_refused_and_short_ones_overtake_long_ones():
    s = _serve(max_prompt_tokens=8192, long_prompt_tokens=100)  # one worker (no long_system): both lanes on it
    port = s.server_address[1]
    try:
        err = _is_error(*_post(port, json.dumps(_chat("word " * 7200)).encode()), 400)  # 36 KB
        assert err["code"] == "context_length_exceeded" and "limit of 8192" in err["message"], err
        answers = {}

        def ask(name, text):
            answers[name] = (_post(port, json.dumps(_chat(text)).encode())[0], time.perf_counter())

        t0 = time.perf_counter()
        threads = []
        for name, text, delay in (("long-a", "x" * 2000, 0), ("long-b", "y" * 2000, 0.15), ("short", "hi", 0.3)):
            time.sleep(delay - (time.perf_counter() - t0) if delay else 0)
            threads.append(threading.Thread(target=ask, args=(name, text)))
            threads[-1].start()
        for t in threads:
            t.join(timeout=30)
        assert all(status == 200 for status, _ in answers.values()), answers
        # long-a was decoding when the short one came: it waits for that one, not for long-b as well
        assert [text[:1] for text in s.system.seen] == ["x", "h", "y"]
        assert answers["short"][1] < answers["long-b"][1] and answers["short"][1] - t0 < 1.0
    finally:
        s.stop()
    assert s.errors == 0


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 20  # (only against a hang: the order is checked by the events and the log)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _prompt(route: str, size: int) -> tuple[bytes, str]:
    """A body of `size` characters (chat) or rows of embeddings (prompt_embeds), and its path."""
    if route == "chat":
        return json.dumps(_chat("x" * size, "gated")).encode(), "/v1/chat/completions"
    import torch

    from systems.endpoint import embeds_base64

    body = {"model": "gated", "prompt_embeds": embeds_base64(torch.zeros(size // 10, 4))}
    return json.dumps(body).encode(), "/v1/completions"


@pytest.mark.parametrize("route", ["chat", "embeds"])
def test_a_short_request_is_answered_while_a_long_one_decodes(route):
    """The long lane's own worker, with a second instance of the system: a short request sent while a
    long one is decoding (provably: the long one holds its decode until the test releases it, which
    the test does only after the short answer is in) is answered by the other instance."""
    log, started, release = [], threading.Event(), threading.Event()
    short_system, long_system = Gated(log, started, release), Gated(log, started, release)
    s = _serve(short_system, long_system, long_prompt_tokens=100)
    port, answers = s.server_address[1], {}
    try:
        body, path = _prompt(route, 2000)
        long = threading.Thread(target=lambda: answers.update(long=_post(port, body, path=path, timeout=60)))
        long.start()
        assert started.wait(timeout=20)  # the long prompt is decoding, and stays so until released
        status, _, answer = _post(port, _prompt(route, 20)[0], path=path)
        assert status == 200, answer
        assert not release.is_set() and "long" not in answers  # answered while the long one decodes
        release.set()
        long.join(timeout=20)
        assert answers["long"][0] == 200
    finally:
        release.set()
        s.stop()
    assert s.errors == 0
    long_size, short_size = (2000, 20) if route == "chat" else (200, 2)  # (characters, or rows)
    assert [(event, system is long_system, sizes) for event, system, sizes in log] == [
        ("start", True, [long_size]), ("start", False, [short_size]), ("end", False, [short_size]),
        ("end", True, [long_size])]


def test_without_the_long_lane_worker_a_decoding_long_prompt_holds_short_ones():
    """--no-long-lane-worker: one worker, one instance; a short request queued while a long one decodes
    starts only after it ends."""
    log, started, release = [], threading.Event(), threading.Event()
    s = _serve(Gated(log, started, release), long_prompt_tokens=100)
    port, answers = s.server_address[1], {}
    try:
        threads = [threading.Thread(target=lambda n=n: answers.update({n: _post(port, _prompt("chat", n)[0])}))
                   for n in (2000, 20)]
        threads[0].start()
        assert started.wait(timeout=20)
        threads[1].start()
        _until(lambda: s.batcher._short, "the short request to be queued")
        assert [(event, sizes) for event, _, sizes in log] == [("start", [2000])]  # it waits
        release.set()
        for t in threads:
            t.join(timeout=20)
        assert answers[2000][0] == answers[20][0] == 200
    finally:
        release.set()
        s.stop()
    assert s.errors == 0
    assert [(event, sizes) for event, _, sizes in log] == [
        ("start", [2000]), ("end", [2000]), ("start", [20]), ("end", [20])]


def test_the_long_lanes_system_must_be_the_served_one():
    class Other(Slow):
        def fingerprint(self):
            return "other-1"

    with pytest.raises(ValueError, match="not the same as the served one"):
        Server(Slow(), port=0, long_system=Other())


def test_full_queue_answers_429_with_retry_after():
    system = Slow()
    s = Server(system, port=0, max_new_tokens=16, max_queue=1).start()
    port = s.server_address[1]
    try:
        system.gate.clear()  # the worker holds the first request
        first = threading.Thread(target=_post, args=(port, json.dumps(_chat("a")).encode()))
        first.start()
        while not system.seen:
            time.sleep(0.01)
        second = threading.Thread(target=_post, args=(port, json.dumps(_chat("b")).encode()))
        second.start()
        while not s.batcher._short:
            time.sleep(0.01)
        err = _is_error(*(r := _post(port, json.dumps(_chat("c")).encode())), 429)
        assert r[1]["retry-after"] == "1" and err["type"] == "rate_limit_error"
    finally:
        system.gate.set()
        first.join(timeout=10)
        second.join(timeout=10)
        s.stop()


def test_usage_counts_the_prompt_with_the_systems_tokenizer():
    from systems.common import DecodeConfig
    from systems.text import TextTopline
    from tests.fakes import tiny_llm

    llm = tiny_llm()
    system = TextTopline(llm, DecodeConfig(max_new_tokens=8))
    s = Server(system, port=0, max_new_tokens=8).start()
    try:
        assert s.max_prompt_tokens == 512 - 8  # the model's context less the answer
        conn = http.client.HTTPConnection("127.0.0.1", s.server_address[1], timeout=30)
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus two?"}]
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": "text", "messages": msgs}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        usage = json.loads(r.read())["usage"]
        assert r.status == 200 and usage["prompt_tokens"] == len(llm.prompt_ids(msgs))
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        status, _, body = _post(s.server_address[1], json.dumps(_chat("z" * 600, "text")).encode())
        assert status == 400 and "limit of 504" in json.loads(body)["error"]["message"]
    finally:
        s.stop()


def test_messages_carry_no_internals(server):
    port = server.server_address[1]
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"not audio").decode(), "format": "wav"}}
    err = _is_error(*_post(port, json.dumps(_chat([audio])).encode()), 400)
    assert "cannot read audio" in err["message"] and "0x" not in err["message"] and "BytesIO" not in err["message"]
    err = _is_error(*_post(port, json.dumps(_chat("BOOM")).encode()), 500)
    assert "RuntimeError" in err["message"] and "0x" not in err["message"] and "/srv" not in err["message"]


def test_chat_and_prompt_embeds_never_use_one_instance_at_once():
    """The chat and the prompt-embeds batchers each have a worker, but share the served instance: a
    prompt-embeds request that arrives while a chat request decodes waits for it (the system is not
    thread-safe)."""
    log, started, release = [], threading.Event(), threading.Event()
    s = _serve(Gated(log, started, release), long_prompt_tokens=None)
    port, answers = s.server_address[1], {}
    try:
        chat = threading.Thread(target=lambda: answers.update(chat=_post(port, _prompt("chat", 2000)[0])))
        chat.start()
        assert started.wait(timeout=20)  # the chat request is decoding until released
        body, path = _prompt("embeds", 20)
        embeds = threading.Thread(target=lambda: answers.update(embeds=_post(port, body, path=path)))
        embeds.start()
        _until(lambda: not s.embeds_batcher._short and s.embeds_batcher.batches, "the embeds batch to be taken")
        time.sleep(0.2)  # its worker now waits on the instance's lock (without the lock it would have started)
        assert [(event, sizes) for event, _, sizes in log] == [("start", [2000])]
        release.set()
        for t in (chat, embeds):
            t.join(timeout=20)
    finally:
        release.set()
        s.stop()
    assert answers["chat"][0] == 200 and answers["embeds"][0] == 200
    assert [(event, sizes) for event, _, sizes in log] == [("start", [2000]), ("end", [2000]), ("start", [2]),
                                                           ("end", [2])]
