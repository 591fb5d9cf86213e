"""Where the harness finds its plug-ins: registries declared by the `systems` and `tasks` packages
(by module name, imported lazily), plus third-party entry points. This file is the only place in
`bench` that names those packages.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from bench.registry import Registry


def systems() -> Registry:
    return importlib.import_module("systems").REGISTRY


def tasks() -> Registry:
    return importlib.import_module("tasks").REGISTRY


def trainers() -> Registry:
    return importlib.import_module("systems").TRAINERS


def suites() -> dict[str, dict]:
    return importlib.import_module("tasks.suites").SUITES


class Context:
    """Options and shared resources for building systems, so that (for example) the topline and
    the cascade share one loaded LLM."""

    def __init__(self, **options: Any):
        self.options = options
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]


def build_system(name: str, ctx: Context):
    system = systems().get(name)(ctx)
    system.name = name
    return system


def build_task(name: str, **kwargs):
    """A task by name; `name:ARG` passes ARG to the task's constructor (e.g. `manifest:data/my.jsonl`)."""
    base, _, arg = name.partition(":")
    return tasks().get(base)(*([arg] if arg else []), **kwargs)
