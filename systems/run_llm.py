"""The run's chat LLM, shared by the systems that prompt it: a handle that knows the model's identity
(all a fingerprint needs) and builds `systems.llm.ChatLLM` on first use. Apart from systems/common.py,
which systems/llm.py builds on: the one place that reaches from the torch-free helpers to the model."""
from __future__ import annotations

from bench.plugins import Context
from systems.common import DEFAULT_LLM, Lazy, llm_identity


def shared_llm(ctx: Context):
    """The run's chat LLM, shared by every system that uses it: a handle that knows the model's
    identity (for fingerprints) and makes the ChatLLM on first use (which reads the weights on its
    own first use), so a fully cached run never imports or loads it."""
    spec = ctx.options.get("llm") or DEFAULT_LLM
    return ctx.shared(f"llm:{spec}", lambda: Lazy(llm_identity(spec, ctx.options.get("dtype", "float32")),
                                                  lambda: load_llm(ctx)))


def load_llm(ctx: Context):
    """A new instance of the run's chat LLM (for a system that changes its modules, such as LoRA)."""
    from systems.llm import ChatLLM  # here, not at the top: a fully cached run never imports torch

    return ChatLLM.load(ctx.options.get("llm") or DEFAULT_LLM, dtype=ctx.options.get("dtype", "float32"),
                        device=ctx.options.get("device", "cpu"),
                        trust_remote_code=bool(ctx.options.get("trust_remote_code", False)))
