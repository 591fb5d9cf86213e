"""AudioChatLlama with the frozen LLM's decoding on a server, from prompt embeddings (vLLM's
`--enable-prompt-embeds` route, POST /v1/completions): a real `serve` of the text system on the same
tiny LLM answers exactly what the local decode gives; bad embeddings are refused with the reason."""
import base64
import io
import json
import pickle
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from bench.serve import Server
from bench.types import Audio, Request, Turn
from systems.common import DecodeConfig
from systems.endpoint import EndpointError, OpenAIEndpoint, embeds_base64


@pytest.fixture(scope="module")
def served():
    from systems.audiochatllama.system import AudioChatLlamaSystem
    from systems.text import TextTopline
    from tests.e2e_tiny import tiny_model

    model = tiny_model(seed=3).eval()
    server = Server(TextTopline(model.llm, DecodeConfig(8)), port=0, max_new_tokens=8, max_batch=4).start()
    remote = OpenAIEndpoint("text", server.url, max_new_tokens=8, retries=0, concurrency=4)
    yield model, server, AudioChatLlamaSystem(model, DecodeConfig(8), remote=remote), AudioChatLlamaSystem(model, DecodeConfig(8))
    server.stop()


def _tone(seconds: float, freq: float) -> Audio:
    t = np.arange(int(16000 * seconds)) / 16000
    return Audio((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def _post(url: str, body: dict):
    req = urllib.request.Request(url + "/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_decoding_on_the_server_gives_the_local_answers(served):
    model, server, remote, local = served
    reqs = [Request(Turn("user", audio=_tone(0.4 + 0.2 * k, 200 + 90 * k))) for k in range(4)]
    reqs += [Request(Turn("user", text="typed only"), (), "Answer briefly."),
             Request(Turn("user", text="and now?"), (Turn("user", audio=_tone(0.5, 440)), Turn("assistant", text="ok")))]
    with torch.no_grad():
        here, there = local.generate_batch(reqs), remote.generate_batch(reqs)
    assert [(g.text, g.tokens) for g in there] == [(g.text, g.tokens) for g in here]
    assert len({g.text for g in here}) > 1  # the answers depend on the audio: a real comparison
    assert sum(server.embeds_batcher.batches) == len(reqs) and max(server.embeds_batcher.batches) > 1
    assert remote.fingerprint() != local.fingerprint()  # served outputs are never the local ones' cache entries


def test_the_server_refuses_embeddings_it_cannot_decode(served):
    model, server, _, _ = served
    dim = model.llm.model.get_input_embeddings().embedding_dim
    ok = {"model": "text", "temperature": 0, "max_tokens": 8}
    status, body = _post(server.url, {**ok, "prompt_embeds": embeds_base64(torch.zeros(3, dim + 1))})
    assert status == 400 and f"must be (tokens, {dim})" in body["error"]["message"]
    status, body = _post(server.url, {**ok, "prompt": "hello"})
    assert status == 400 and "send prompt_embeds" in body["error"]["message"]
    status, body = _post(server.url, {**ok, "prompt_embeds": "not base64!"})
    assert status == 400 and "not base64 of a torch.save'd tensor" in body["error"]["message"]
    buf = io.BytesIO()
    pickle.dump({"a": object.__class__}, buf, protocol=2)  # a pickle that is not tensors only: weights_only refuses it
    status, body = _post(server.url, {**ok, "prompt_embeds": base64.b64encode(buf.getvalue()).decode()})
    assert status == 400
    status, body = _post(server.url, {**ok, "prompt_embeds": embeds_base64(torch.full((2, dim), float("nan")))})
    assert status == 400 and "NaN" in body["error"]["message"]
    status, body = _post(server.url, {**ok, "temperature": 0.7, "prompt_embeds": embeds_base64(torch.zeros(2, dim))})
    assert status == 400 and "greedily" in body["error"]["message"]
    status, body = _post(server.url, {**ok, "prompt_embeds": embeds_base64(torch.randn(2, dim))})
    assert status == 200 and body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)


def test_a_server_of_a_system_that_cannot_decode_embeddings_says_so():
    from tests.fakes import FakeSystem

    server = Server(FakeSystem(), port=0, max_new_tokens=8).start()
    try:
        client = OpenAIEndpoint("fake", server.url, max_new_tokens=8, retries=0)
        with pytest.raises(EndpointError, match="HTTP 404 .*does not decode from prompt embeddings"):
            client.complete_embeds([torch.zeros(2, 4)])
    finally:
        server.stop()


def test_the_served_route_is_a_system_argument_and_refuses_lora(tmp_path):
    from bench.plugins import Context, check_system_args
    from systems.audiochatllama.system import _remote

    check_system_args("audiochatllama", {"server": "http://127.0.0.1:1/v1", "served_model": "m", "concurrency": "2"})
    ctx = Context().for_system({"server": "http://127.0.0.1:1/v1"})
    assert _remote(ctx, {"model": {"llm": "smollm2"}}, lora=False).model == "smollm2"
    with pytest.raises(ValueError, match="LoRA"):
        _remote(ctx, {"model": {"llm": "smollm2"}}, lora=True)


@pytest.mark.slow
def test_the_embedded_audiochatllama_decoded_by_a_served_smollm2_answers_as_it_does_locally(tmp_path):
    """The real route: `serve --system text` (SmolLM2) decodes the embedded token-bridge checkpoint's
    prompts, through the runner, item for item as the local decode does."""
    from bench.evaluate import Plan, evaluate
    from bench.plugins import Context, build_system

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = Context(max_new_tokens=16)
    server = Server(build_system("text", ctx), port=0, max_new_tokens=16, max_batch=8).start()
    try:
        common = dict(systems=["audiochatllama"], tasks=["spoken-qa"], limit=4, max_new_tokens=16, batch_size=4)
        local = evaluate(Plan(output_dir=str(tmp_path / "a"), **common), progress=False, write=False,
                         log=lambda _: None, built={"audiochatllama": build_system("audiochatllama", ctx)})
        served = evaluate(Plan(output_dir=str(tmp_path / "b"), system_args={"audiochatllama": {
            "server": server.url, "served_model": "text"}}, **common), progress=False, write=False, log=lambda _: None)
    finally:
        server.stop()
        torch.set_num_threads(threads)
    here, there = local.outputs("audiochatllama", "spoken-qa"), served.outputs("audiochatllama", "spoken-qa")
    assert len(here) == 4 and all(g is not None for g in (*here.values(), *there.values()))
    assert {i: (g.text, g.tokens) for i, g in there.items()} == {i: (g.text, g.tokens) for i, g in here.items()}
    assert local.meta["fingerprints"] != served.meta["fingerprints"]
