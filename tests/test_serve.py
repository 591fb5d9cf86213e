"""`serve` and the `openai` endpoint system against each other, over real HTTP on 127.0.0.1: the same
outputs as a direct run, audio in, the server's limits, the client's retries, and a server killed
mid-run (failed items with reasons, then a resumed run that computes only what is missing)."""
import base64
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.plugins import Context, build_system
from bench.serve import Limits, Server, parse_chat
from bench.types import Audio, Generation, Request, System, Turn
from systems.endpoint import EndpointError, OpenAIEndpoint, to_openai_messages

ROOT = Path(__file__).resolve().parents[1]


def _tone(seconds=0.5, sr=16000, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return Audio((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _wav_b64(audio: Audio, subtype="FLOAT") -> str:
    buf = io.BytesIO()
    sf.write(buf, audio.samples, audio.sample_rate, format="WAV", subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


class Hear(System):
    """Answers with what it received: the sha256 of the spoken turn's samples (its 'transcript' the
    sample count), or the typed text reversed; and the shape of the conversation."""

    name = "hear"

    def fingerprint(self):
        return "hear-1"

    def generate_batch(self, requests):
        out = []
        for r in requests:
            if r.transcript_only:  # the ASR task's request: only the reading is wanted
                out.append(Generation("", transcript="transcript only", tokens=0))
            elif r.turn.spoken:
                out.append(Generation(hashlib.sha256(r.turn.audio.samples.tobytes()).hexdigest(),
                                      transcript=f"{r.turn.audio.samples.size} samples", tokens=3))
            else:
                if "FAIL" in r.turn.text:
                    raise ValueError(f"cannot answer {r.turn.text!r}")
                out.append(Generation(r.turn.text[::-1] + f"|{len(r.history)}|{r.instruction}", tokens=2))
        return out


@pytest.fixture
def hear_server():
    server = Server(Hear(), port=0, limits=Limits(max_body_bytes=2 ** 20, max_audio_seconds=5.0),
                    max_new_tokens=16).start()
    yield server
    server.stop()


def _post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _client(url, model="hear", **kw):
    return OpenAIEndpoint(model, url, max_new_tokens=16, **{"retries": 0, "backoff": 0.01, **kw})


# -- request mapping ---------------------------------------------------------------------------

def test_request_round_trips_through_openai_messages():
    req = Request(Turn("user", audio=_tone(0.3, 8000), transcript="gold, never sent"),
                  (Turn("user", text="my name is Ada"), Turn("assistant", text="hello Ada"),
                   Turn("user", audio=_tone(0.2))), instruction="Answer briefly.")
    msgs = to_openai_messages(req)
    assert "gold, never sent" not in json.dumps(msgs)  # a served model never sees the gold transcript
    back = parse_chat({"model": "m", "messages": msgs}, "m", 64, Limits())
    assert back.instruction == "Answer briefly."
    assert [(t.role, t.text) for t in back.history[:2]] == [("user", "my name is Ada"), ("assistant", "hello Ada")]
    assert back.history[2].spoken and np.array_equal(back.history[2].audio.samples, req.history[2].audio.samples)
    from bench.audio import resample

    assert back.turn.spoken and back.turn.audio.sample_rate == 16000  # resampled from 8 kHz on the server
    assert np.array_equal(back.turn.audio.samples, resample(req.turn.audio.samples, 8000))


# -- the served system, through the client -----------------------------------------------------

def test_client_gets_what_a_direct_call_gets(hear_server):
    reqs = [Request(Turn("user", audio=_tone(0.3, freq=300 + 50 * k))) for k in range(3)]
    reqs += [Request(Turn("user", text="hello"), (Turn("user", audio=_tone()), Turn("assistant", text="hi")), "Be brief.")]
    direct = Hear().generate_batch(reqs)
    served = _client(hear_server.url).generate_batch(reqs)
    assert [g.text for g in served] == [g.text for g in direct]  # lossless audio in: the same samples heard
    assert [g.transcript for g in served] == [g.transcript for g in direct]  # the `audiochat` extension
    assert [g.tokens for g in served] == [g.tokens for g in direct]
    assert all(g.seconds["endpoint"] > 0 for g in served)


def test_asr_requests_say_transcript_only_to_a_server_that_lists_the_extension(hear_server, flaky):
    asr = [Request(Turn("user", audio=_tone()), transcript_only=True), Request(Turn("user", text="ab"))]
    served = _client(hear_server.url).generate_batch(asr)
    assert [(g.text, g.transcript) for g in served] == [("", "transcript only"), ("ba|0|None", None)]
    assert parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "m", 64,
                      Limits()).transcript_only is False
    from bench.serve import ApiError

    with pytest.raises(ApiError, match="transcript_only"):
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "audiochat": {"transcript_only": 1}},
                   "m", 64, Limits())
    # a server without the extension (no GET /models here) gets the standard request only
    url = f"http://127.0.0.1:{flaky.server_address[1]}/v1"
    assert _client(url, "m").generate_batch([Request(Turn("user", text="hi"), transcript_only=True)])[0].text == "ok"
    assert flaky.bodies[-1]["messages"] and "audiochat" not in flaky.bodies[-1]


def test_concurrent_requests_are_batched(hear_server):
    client = _client(hear_server.url, concurrency=8)
    reqs = [Request(Turn("user", text=f"q{k}")) for k in range(8)]
    assert [g.text for g in client.generate_batch(reqs)] == [f"{k}q|0|None" for k in range(8)]
    assert sum(hear_server.batcher.batches) == 8 and max(hear_server.batcher.batches) > 1


def test_models_and_response_shape(hear_server):
    with urllib.request.urlopen(hear_server.url + "/models") as r:
        models = json.loads(r.read())
    assert [m["id"] for m in models["data"]] == ["hear"]
    assert models["data"][0]["audiochat"]["fingerprint"] == "hear-1"
    status, body = _post(hear_server.url, {"model": "hear", "messages": [{"role": "user", "content": "abc"}],
                                           "temperature": 0, "max_tokens": 16})
    assert status == 200 and body["object"] == "chat.completion" and body["system_fingerprint"] == "hear-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "cba|0|None"}
    assert body["usage"]["completion_tokens"] == 2 and body["audiochat"]["transcript"] is None


@pytest.mark.parametrize("case,status,needle", [
    ("unknown model", 404, "not served here"),
    ("malformed json", 400, "not valid JSON"),
    ("oversized body", 413, "over this server's limit"),
    ("long audio", 400, "over the 5 s limit"),
    ("path as audio", 400, "looks like a path or URL"),
    ("url as audio", 400, "looks like a path or URL"),
    ("file key in audio", 400, "never reads files"),
    ("audio_url part", 400, "never fetches URLs"),
    ("text and audio in one message", 400, "either text or exactly one input_audio"),
    ("not base64", 400, "not valid base64"),
    ("not audio", 400, "cannot read audio"),
    ("base64 that starts with a slash", 400, "cannot read audio"),  # an MP3 frame's base64 is not a path
    ("sampling", 400, "greedily"),
    ("other max_tokens", 400, "at most 16 tokens"),
    ("assistant last", 400, "last message must be a user"),
])
def test_server_refuses_bad_requests(hear_server, case, status, needle):
    audio = lambda data, **kw: {"type": "input_audio", "input_audio": {"data": data, "format": "wav", **kw}}
    user = lambda *parts: {"model": "hear", "messages": [{"role": "user", "content": list(parts)}]}
    bodies = {
        "unknown model": {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]},
        "oversized body": {"model": "hear", "messages": [{"role": "user", "content": "x" * (2 ** 20 + 10)}]},
        "long audio": user(audio(_wav_b64(_tone(6.0), "PCM_16"))),
        "path as audio": user(audio("/etc/passwd")),
        "url as audio": user(audio("file:///etc/passwd")),
        "file key in audio": user(audio(_wav_b64(_tone()), path="/tmp/x.wav")),
        "audio_url part": user({"type": "audio_url", "audio_url": {"url": "http://example.com/a.wav"}}),
        "text and audio in one message": user({"type": "text", "text": "transcribe:"}, audio(_wav_b64(_tone()))),
        "not base64": user(audio("!!!not-base64!!!")),
        "not audio": user(audio(base64.b64encode(b"hello world, not a wav").decode())),
        "base64 that starts with a slash": user(audio(base64.b64encode(b"\xff\xfb\x90" + bytes(61)).decode())),
        "sampling": {"model": "hear", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7},
        "other max_tokens": {"model": "hear", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100},
        "assistant last": {"model": "hear", "messages": [{"role": "assistant", "content": "hi"}]},
    }
    got, body = _post(hear_server.url, bodies.get(case), raw=b"{not json" if case == "malformed json" else None)
    assert got == status and needle in body["error"]["message"], body
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_unanswerable_request_fails_alone_with_the_systems_reason(hear_server):
    reqs = [Request(Turn("user", text=t)) for t in ("a", "FAIL-me", "c")]
    client = _client(hear_server.url, retries=2)
    with pytest.raises(EndpointError, match=r"HTTP 400 .*cannot answer 'FAIL-me'"):
        client.generate_batch(reqs)
    # the runner then asks one by one: answers from that batch, not sent again (nor the failure retried)
    n = sum(hear_server.batcher.batches)
    assert client.generate_batch([reqs[0]])[0].text.startswith("a|")
    with pytest.raises(EndpointError, match="FAIL-me"):
        client.generate_batch([reqs[1]])
    assert sum(hear_server.batcher.batches) == n


# -- the client's retries, against a server that misbehaves on purpose --------------------------

class _Flaky(BaseHTTPRequestHandler):
    """Answers each POST with the next status of the server's script (200: a completion)."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        srv = self.server
        srv.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        srv.seen.append(self.headers.get("Authorization"))
        status = srv.script.pop(0) if srv.script else 200
        body = ({"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": {"completion_tokens": 1}}
                if status == 200 else {"error": {"message": f"scripted {status}", "type": "x"}})
        data = json.dumps(body).encode()
        self.send_response(status)
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    srv.script, srv.seen, srv.bodies = [], [], []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_client_retries_429_and_5xx_then_succeeds_and_sends_the_key(flaky, monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sekret")
    flaky.script = [503, 429, 500]
    url = f"http://127.0.0.1:{flaky.server_address[1]}/v1"
    client = _client(url, "m", retries=3, api_key_env="MY_ENDPOINT_KEY")
    assert client.generate_batch([Request(Turn("user", text="hi"))])[0].text == "ok"
    assert flaky.seen == ["Bearer sekret"] * 4
    assert "sekret" not in client.fingerprint() and client.fingerprint() == _client(url, "m").fingerprint()


def test_client_gives_up_after_retries_and_does_not_retry_4xx(flaky):
    url = f"http://127.0.0.1:{flaky.server_address[1]}/v1"
    flaky.script = [503, 503, 503]
    with pytest.raises(EndpointError, match=r"HTTP 503 .*scripted 503 \(gave up after 3 attempts\)"):
        _client(url, "m", retries=2).generate_batch([Request(Turn("user", text="hi"))])
    flaky.script, flaky.seen = [401], []
    with pytest.raises(EndpointError, match="HTTP 401 .*scripted 401"):
        _client(url, "m", retries=3).generate_batch([Request(Turn("user", text="hi"))])
    assert len(flaky.seen) == 1


def test_client_retries_connection_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    with pytest.raises(EndpointError, match=r"cannot reach .*gave up after 2 attempts"):
        _client(f"http://127.0.0.1:{port}/v1", retries=1).generate_batch([Request(Turn("user", text="hi"))])


def test_openai_system_needs_model_and_url():
    with pytest.raises(ValueError, match="openai:model=NAME,base_url="):
        build_system("openai", Context(), {"model": "m"})
    with pytest.raises(ValueError, match="takes no argument 'api_key'"):
        build_system("openai", Context(), {"model": "m", "base_url": "http://x/v1", "api_key": "k"})


# -- a server killed mid-run, as a real process --------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(port, log, env):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cli_with_fakes.py"), "serve", "--system", "fake",
                             "--port", str(port), "--max-batch", "2", "--no-warmup"],
                            env={**env, "FAKE_LOG": str(log)}, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert "serving fake" in proc.stdout.readline()
    return proc


@pytest.mark.slow
def test_killed_server_leaves_failed_items_and_a_resumable_run(tmp_path, capsys):
    from bench.cli import main

    port, env = _free_port(), {**os.environ, "FAKE_DELAY": "0.3", "OMP_NUM_THREADS": "1"}
    log1, log2 = tmp_path / "first.log", tmp_path / "second.log"
    args = ["run", "--systems", "openai", "--tasks", "typed-qa", "--limit", "10", "--batch-size", "2",
            "--output-dir", str(tmp_path), "--no-progress", "--system-args",
            f"openai:model=fake,base_url=http://127.0.0.1:{port}/v1,retries=1,backoff=0.05,concurrency=2"]
    server = _start_serve(port, log1, env)

    def kill_after_two_batches():
        while not log1.exists() or len(log1.read_text().splitlines()) < 4:
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_two_batches)
    killer.start()
    try:
        assert main(args) == 0
    finally:
        killer.join(timeout=30)
        server.kill()
        server.wait()
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    counts = json.loads((run_dir / "config.json").read_text())["counts"]
    assert counts["generated"] >= 2 and counts["failed"] >= 4 and counts["generated"] + counts["failed"] == 10, counts
    failed = [o for o in map(json.loads, (run_dir / "outputs.jsonl").read_text().splitlines()) if o["status"] == "failed"]
    assert len(failed) == counts["failed"] and all("cannot reach" in o["error"] for o in failed), failed

    server = _start_serve(port, log2, env)  # the same endpoint again: the same fingerprint, the cache applies
    try:
        assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    finally:
        server.kill()
        server.wait()
    counts2 = json.loads((run_dir / "config.json").read_text())["counts"]
    assert counts2 == {"generated": counts["failed"], "cached": counts["generated"], "failed": 0}
    # the restarted server computed exactly the missing items
    assert sorted(log2.read_text().splitlines()) == sorted(o["prompt"] for o in failed)
    out = [o for o in map(json.loads, (run_dir / "outputs.jsonl").read_text().splitlines())]
    assert len(out) == 10 and all(o["status"] == "ok" and o["text"] == o["prompt"][::-1] for o in out)


# -- the acceptance check: the text topline direct and through serve + openai -------------------

@pytest.fixture(scope="module")
def text_server():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 busy cores, 2 threads per matmul run ~5× slower than 1
    system = build_system("text", Context(max_new_tokens=16))
    server = Server(system, port=0, max_new_tokens=16, max_batch=8).start()
    yield system, server
    server.stop()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_text_through_serve_equals_text_direct(text_server, tmp_path):
    """Same greedy decode, same outputs. Both sides batch 5 items as one batch of up to 8; the check
    below that direct outputs do not depend on batching (left padding) makes it hold whatever batches
    the server happens to form."""
    from bench.evaluate import Plan, evaluate

    system, server = text_server
    common = dict(tasks=["typed-qa"], limit=5, max_new_tokens=16, output_dir=str(tmp_path), batch_size=8)
    direct = evaluate(Plan(systems=["text"], **common), progress=False, write=False, log=lambda _: None,
                      built={"text": system})
    one_by_one = evaluate(Plan(systems=["text"], **{**common, "batch_size": 1, "cache": str(tmp_path / "b1.sqlite")}),
                          progress=False, write=False, log=lambda _: None, built={"text": system})
    served = evaluate(Plan(systems=["openai"], system_args={"openai": {"model": "text", "base_url": server.url}},
                           **common), progress=False, write=False, log=lambda _: None)
    d, b1, s = (r.outputs(n, "typed-qa") for r, n in ((direct, "text"), (one_by_one, "text"), (served, "openai")))
    assert len(d) == 5 and all(g is not None for g in (*d.values(), *s.values()))
    assert {i: g.text for i, g in b1.items()} == {i: g.text for i, g in d.items()}  # padding-invariant here
    assert {i: (g.text, g.tokens) for i, g in s.items()} == {i: (g.text, g.tokens) for i, g in d.items()}
    assert max(server.batcher.batches) > 1  # and the server did batch


@pytest.mark.slow
def test_text_served_cannot_hear_audio_and_says_so(text_server):
    _, server = text_server
    with pytest.raises(EndpointError, match="HTTP 400 .*text cannot answer this request: .*no gold transcript"):
        _client(server.url, "text", retries=2).generate_batch([Request(Turn("user", audio=_tone()))])


def test_a_request_asks_for_its_tasks_answer_length_and_the_server_honours_it(flaky):
    """A run's endpoint sends each request's answer length and stop strings (its task's); `serve` takes a
    length up to its own cap and the stop strings into the request, and refuses a longer one."""
    url = f"http://127.0.0.1:{flaky.server_address[1]}/v1"
    client = _client(url, "m")
    client.generate_batch([Request(Turn("user", text="hi"), max_new_tokens=8, stop=("\n",))])
    client.generate_batch([Request(Turn("user", text="hi"))])
    assert [(b["max_tokens"], b.get("stop")) for b in flaky.bodies[-2:]] == [(8, ["\n"]), (16, None)]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    req = parse_chat({**body, "max_tokens": 8, "stop": "\n"}, "m", 16, Limits())
    assert (req.max_new_tokens, req.stop) == (8, ("\n",))
    assert parse_chat(body, "m", 16, Limits()).max_new_tokens is None
    from bench.serve import ApiError

    for bad in ({"max_tokens": 17}, {"max_tokens": 0}, {"max_tokens": "8"}, {"stop": ["a"] * 5}, {"stop": [""]}):
        with pytest.raises(ApiError):
            parse_chat({**body, **bad}, "m", 16, Limits())
