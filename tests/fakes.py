"""A fake system and a tiny chat LLM for tests: no network, no downloads."""
from __future__ import annotations

import os
import time
from typing import Sequence

import torch

from bench.plugins import takes
from bench.types import Generation, Request, System, Task, TokenLogProbs

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


class FakeSystem(System):
    """Answers with the gold text reversed; fails on any prompt containing 'FAIL'. Optional delay
    per batch (env FAKE_DELAY) and a log of every generated item (env FAKE_LOG), for resume tests."""

    name = "fake"

    def __init__(self, version: str = "1"):
        self.version = version

    def fingerprint(self) -> str:
        return f"fake-{self.version}"

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        delay = float(os.environ.get("FAKE_DELAY", "0"))
        if delay:
            time.sleep(delay)
        out = []
        for r in requests:
            text = r.turn.gold_text
            if "FAIL" in text:
                raise RuntimeError(f"cannot answer {text!r}")
            out.append(Generation(text=text[::-1], seconds={"llm": 0.0}, tokens=len(text)))
        if os.environ.get("FAKE_LOG"):
            with open(os.environ["FAKE_LOG"], "a") as f:
                f.writelines(r.turn.gold_text + "\n" for r in requests)
        return out

    def score(self, request: Request, target: str) -> TokenLogProbs:
        return TokenLogProbs(tuple(-0.5 for _ in target))


class EchoSystem(FakeSystem):
    """Answers with the gold text itself (agrees with a topline that echoes)."""

    def fingerprint(self) -> str:
        return f"echo-{self.version}"

    def generate_batch(self, requests):
        return [Generation(text=r.turn.gold_text) for r in requests]


class BrokenSystem(FakeSystem):
    """Fails every batch (a model that cannot load, an endpoint that is down)."""

    def fingerprint(self) -> str:
        return f"broken-{self.version}"

    def generate_batch(self, requests):
        raise RuntimeError("broken on purpose")


@takes(reverse="no: answer with the gold text as it is (an option a test can see arrive)")
def build_fake(ctx) -> FakeSystem:
    if ctx.args.get("reverse") == "no":
        return EchoSystem()
    return FakeSystem(str(ctx.options.get("max_new_tokens", 64)))


def build_echo(ctx) -> EchoSystem:
    return EchoSystem()


def build_broken(ctx) -> BrokenSystem:
    return BrokenSystem()


def register() -> None:
    import systems

    systems.REGISTRY.register("fake", "tests.fakes:build_fake")
    systems.REGISTRY.register("echo", "tests.fakes:build_echo")
    systems.REGISTRY.register("broken", "tests.fakes:build_broken")
    systems.REGISTRY.register("hear-a", "tests.fakes:build_hear_a")
    systems.REGISTRY.register("hear-b", "tests.fakes:build_hear_b")


def tiny_tokenizer():
    """Byte-level tokenizer (256 byte symbols + ChatML specials) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for sp in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[sp] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML
    return tok


def tiny_llm(seed: int = 0):
    """A randomly initialised 2-layer Llama with the tiny tokenizer, wrapped as a ChatLLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from systems.llm import ChatLLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=False,
                      initializer_range=0.2)  # large init: outputs that vary with the prompt
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    return ChatLLM(model, tok, identity=f"tiny-llama-seed{seed}")


class FakeQA(Task):
    """A small task: 'q<k>' prompts (one of them 'FAIL-me'), scored against the reversed prompt."""

    name = "fake-qa"
    version = "1"
    description = "fake items for runner tests"

    def __init__(self, n: int = 12):
        from bench.types import Metric

        self.n = n
        self.metrics = (
            Metric("accuracy", "item", True, lambda it, g, c: float(g.text == it.references[0])),
            Metric("agree_echo", "item", True,
                   lambda it, g, c: None if c.get("echo") is None else float(g.text == c["echo"].text), needs="echo"),
            Metric("chars", "corpus", True, lambda it, g, c: (len(g.text), 1), lambda t: t[0] / t[1]),
        )

    def items(self, limit=None):
        from bench.types import Item, Turn

        texts = [f"q{k}" if k != 5 else "FAIL-me" for k in range(self.n)]
        items = [Item(id=f"fake-{k:03d}", turn=Turn("user", transcript=t), references=(t[::-1],))
                 for k, t in enumerate(texts)]
        return items if limit is None else items[:limit]


def register_task() -> None:
    import tasks

    tasks.REGISTRY.register("fake-qa", "tests.fakes:FakeQA")


class AudioHashSystem(FakeSystem):
    """Answers with a hash of the audio it received (to check what each system hears)."""

    def fingerprint(self) -> str:
        return f"audiohash-{self.version}"

    def generate_batch(self, requests):
        import hashlib

        return [Generation(text=hashlib.sha256(r.turn.audio.samples.tobytes()).hexdigest()) for r in requests]


def build_hear_a(ctx):
    return AudioHashSystem("a")  # distinct fingerprints: nothing is shared through the cache


def build_hear_b(ctx):
    return AudioHashSystem("b")
