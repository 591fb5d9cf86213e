"""Property: whatever body a client POSTs (arbitrary JSON, JSON shaped like a chat request with
arbitrary values, or arbitrary bytes), a real `serve` answers promptly with a 2xx, or a 4xx carrying
an OpenAI error body; never a 500, a hang or a traceback (`Server.errors` counts what escaped)."""
import base64
import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.serve import Limits, Server
from bench.types import Generation, System


class Echo(System):
    name = "echo"

    def fingerprint(self):
        return "echo-1"

    def generate_batch(self, requests):
        return [Generation((r.turn.text or "")[::-1], transcript="heard" if r.turn.spoken else None, tokens=1)
                for r in requests]


@pytest.fixture(scope="module")
def server():
    s = Server(Echo(), port=0, limits=Limits(max_body_bytes=2 ** 16, max_audio_seconds=2.0), max_new_tokens=16,
               batch_wait_ms=0).start()
    yield s
    s.stop()


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                              inner, max_size=4),
                        max_leaves=20)
audio_part = st.fixed_dictionaries({"type": st.just("input_audio"), "input_audio": st.fixed_dictionaries(
    {"data": st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=30),
     "format": st.sampled_from(["wav", "flac", "ogg", "mp3", "aiff"]) | any_json})})
content = st.text(max_size=30) | st.lists(audio_part | st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "x"]), "text": any_json}), max_size=3) | any_json
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])
                                 | any_json, "content": content})
chat_like = st.fixed_dictionaries(
    {"model": st.just("echo") | any_json, "messages": st.lists(message, max_size=4) | any_json},
    optional={"temperature": any_json, "max_tokens": any_json, "n": any_json, "stream": any_json,
              "audiochat": any_json, "top_p": any_json})
bodies = (chat_like.map(lambda b: json.dumps(b).encode()) | any_json.map(lambda b: json.dumps(b).encode())
          | st.binary(max_size=300))


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_any_body_gets_a_2xx_or_an_openai_4xx(server, body, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)  # a hang fails here
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = json.loads(r.read())
    finally:
        conn.close()
    assert 200 <= r.status < 300 or 400 <= r.status < 500, (r.status, data)
    if r.status >= 400:
        assert set(data["error"]) == {"message", "type", "param", "code"} and isinstance(data["error"]["message"], str)
    else:
        assert data["object"] == "chat.completion" and data["usage"]["prompt_tokens"] > 0
    assert server.errors == 0
