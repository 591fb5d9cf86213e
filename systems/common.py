"""Helpers shared by the LLM-backed systems: the shared ChatLLM and request → chat messages."""
from __future__ import annotations

from typing import Callable

from bench.plugins import Context
from bench.types import Request, Turn
from systems.llm import DEFAULT_LLM, ChatLLM, DecodeConfig, Messages


def shared_llm(ctx: Context) -> ChatLLM:
    """The run's chat LLM, loaded once and shared by every system that uses it."""
    return ctx.shared(f"llm:{ctx.options.get('llm') or DEFAULT_LLM}", lambda: load_llm(ctx))


def load_llm(ctx: Context) -> ChatLLM:
    """A new instance of the run's chat LLM (for a system that changes its modules, such as LoRA)."""
    return ChatLLM.load(ctx.options.get("llm") or DEFAULT_LLM, dtype=ctx.options.get("dtype", "float32"),
                        device=ctx.options.get("device", "cpu"),
                        trust_remote_code=bool(ctx.options.get("trust_remote_code", False)))


def decode_config(ctx: Context) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=int(ctx.options.get("max_new_tokens", 64)))


def to_messages(request: Request, view: Callable[[Turn], str], system_prompt: str | None = None) -> Messages:
    """Chat messages for a request; `view` turns each user turn into the text the LLM reads.
    The instruction (and any system-specific preface) becomes the system message."""
    sys_parts = [p for p in (system_prompt, request.instruction) if p]
    msgs: Messages = [{"role": "system", "content": "\n".join(sys_parts)}] if sys_parts else []
    for t in (*request.history, request.turn):
        msgs.append({"role": t.role, "content": view(t) if t.role == "user" else t.gold_text})
    return msgs


class Lazy:
    """A model known by its identity, loaded on first use: a fully cached run needs only the
    identities (for cache keys), never the weights."""

    def __init__(self, identity: str, loader):
        self.identity, self._loader, self._obj = identity, loader, None

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_loader", "_obj"):
            raise AttributeError(name)
        if self._obj is None:
            self._obj = self._loader()
        return getattr(self._obj, name)
