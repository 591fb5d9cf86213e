"""Name → import-string registries, imported lazily, with "did you mean" errors.

Plug-in packages (`systems`, `tasks`) declare their registries here-style; third-party packages
can add entries through the entry-point groups `audiochat_bench.systems` / `audiochat_bench.tasks`.
"""
from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Any


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str, entries: dict[str, str], entry_point_group: str | None = None):
        self.kind = kind
        self._entries = dict(entries)
        self._group = entry_point_group
        self._loaded_eps = False

    def _load_entry_points(self) -> None:
        if self._loaded_eps or not self._group:
            return
        self._loaded_eps = True
        for ep in metadata.entry_points(group=self._group):
            self._entries.setdefault(ep.name, ep.value)

    def register(self, name: str, target: str) -> None:
        """Add (or replace) an entry: `target` is "module:attribute"."""
        self._entries[name] = target

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def target(self, name: str) -> str:
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}. "
                f"(`audiochat-bench list` shows them all.)"
            )
        return self._entries[name]

    def get(self, name: str) -> Any:
        """Import and return the object registered as `name`."""
        module, _, attr = self.target(name).partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def parse_list(value: str | None) -> list[str]:
    """'a,b, c' → ['a', 'b', 'c']; empty or None → []."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
