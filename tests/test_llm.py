"""ChatLLM on a tiny random Llama: batching, scoring and embedding entry points agree with the
unbatched / token-id paths."""
import math

import pytest
import torch

from systems.llm import DecodeConfig

PROMPTS = ["hi there", "what is the capital of France?", "x", "a much longer prompt with many words in it",
           "Tell me a story about a cat.", "2+2=?"]


def _msgs(q, system=None):
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]


def test_batched_greedy_equals_unbatched(tiny):
    msgs = [_msgs(q) for q in PROMPTS]
    batched = tiny.generate(msgs, DecodeConfig(16))
    single = [tiny.generate([m], DecodeConfig(16))[0] for m in msgs]
    assert batched == single
    ids = tiny.generate_ids([tiny.prompt_ids(m) for m in msgs], DecodeConfig(16))
    assert len({tuple(i) for i in ids}) > 1, "the tiny model should not answer every prompt alike"


def test_generation_stops_at_eos_and_counts_tokens(tiny):
    ids = tiny.generate_ids([tiny.prompt_ids(_msgs(q)) for q in PROMPTS], DecodeConfig(16))
    assert all(len(i) <= 16 and not set(i) & set(tiny.eos_ids) for i in ids)
    texts = tiny.generate([_msgs(q) for q in PROMPTS], DecodeConfig(16))
    assert [n for _, n in texts] == [len(i) for i in ids]


def test_prompt_uses_chat_template_with_history(tiny):
    history = [{"role": "user", "content": "my name is Ada"}, {"role": "assistant", "content": "hello Ada"}]
    text = tiny.tokenizer.decode(tiny.prompt_ids([*history, {"role": "user", "content": "who am I?"}]))
    assert text.index("my name is Ada") < text.index("hello Ada") < text.index("who am I?")
    assert text.endswith("<|im_start|>assistant\n")


def test_logprobs_batched_equal_single_and_match_manual(tiny):
    pairs = [(_msgs(q), f"answer {k}") for k, q in enumerate(PROMPTS)]
    batched = tiny.logprobs_batch(pairs)
    for (m, t), b in zip(pairs, batched):
        s = tiny.logprobs_batch([(m, t)])[0]
        assert len(s.logprobs) == len(tiny.target_ids(t))
        assert s.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    m, t = pairs[0]
    ids = torch.tensor([tiny.prompt_ids(m) + tiny.target_ids(t)])
    logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0], -1)
    n = len(tiny.target_ids(t))
    manual = [logp[ids.shape[1] - n - 1 + i, ids[0, ids.shape[1] - n + i]].item() for i in range(n)]
    assert batched[0].logprobs == pytest.approx(manual, abs=1e-4)
    assert batched[0].perplexity == pytest.approx(math.exp(-sum(manual) / n), rel=1e-4)


def test_generate_from_embeddings_equals_generate_from_ids(tiny):
    prompts = [tiny.prompt_ids(_msgs(q)) for q in PROMPTS[:3]]
    from_ids = tiny.generate_ids(prompts, DecodeConfig(12))
    with torch.inference_mode():
        from_embeds = tiny.generate_embeds([tiny.embed(p) for p in prompts], DecodeConfig(12))
    assert from_embeds == from_ids


@pytest.mark.slow
def test_embedded_default_batched_equals_unbatched():
    """The real embedded SmolLM2 (fetched from PyPI once): batched greedy output equals unbatched."""
    from systems.llm import ChatLLM

    llm = ChatLLM.load("smollm2")
    qs = ["What is the capital of France?", "How many legs does a spider have?",
          "Name a colour.", "Write one sentence about the sea."]
    msgs = [_msgs(q, "Answer in as few words as possible.") for q in qs]
    assert llm.generate(msgs, DecodeConfig(24)) == [llm.generate([m], DecodeConfig(24))[0] for m in msgs]
    assert "paris" in llm.generate(msgs[:1], DecodeConfig(24))[0][0].lower()
