"""Name → import-string registries, imported lazily, with "did you mean" errors.

Plug-in packages (`systems`, `tasks`) declare their registries here-style; third-party packages
can add entries through the entry-point groups `audiochat_bench.systems` / `audiochat_bench.tasks`.

An entry is either "module:attribute" (the attribute itself is the registered object) or a
configured entry ("module:attribute", {kwargs}): one class registered under several names with
different arguments, e.g. `"translate-en-fr": ("tasks.builtin:Translation", {"target": "fr"})`.
`get` returns a factory for a configured entry, so callers call it the same way either way.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
from importlib import metadata
from typing import Any, Iterator, Mapping, Union

Entry = Union[str, tuple[str, Mapping[str, Any]]]  # "module:attr", or ("module:attr", {kwargs})


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def _check(name: str, target: Entry) -> Entry:
    if isinstance(target, str):
        return target
    if (isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str)
            and isinstance(target[1], Mapping)):
        return target[0], dict(target[1])  # a private copy: the caller's dict may change later
    raise TypeError(f"registry entry {name!r}: expected 'module:attr' or ('module:attr', {{kwargs}}), got {target!r}")


class Registry:
    def __init__(self, kind: str, entries: Mapping[str, Entry], entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {n: _check(n, t) for n, t in entries.items()}
        self._group = entry_point_group
        self._loaded_eps = False

    def _load_entry_points(self) -> None:
        if self._loaded_eps or not self._group:
            return
        self._loaded_eps = True
        for ep in metadata.entry_points(group=self._group):
            self._entries.setdefault(ep.name, ep.value)

    def register(self, name: str, target: Entry) -> None:
        """Add (or replace) an entry: "module:attribute", or ("module:attribute", {kwargs})."""
        self._entries[name] = _check(name, target)

    def snapshot(self) -> tuple[dict[str, Entry], bool]:
        """The registry's current state, for `restore`."""
        return dict(self._entries), self._loaded_eps

    def restore(self, state: tuple[dict[str, Entry], bool]) -> None:
        """Return to a `snapshot`: entries registered since are dropped, replaced ones come back."""
        entries, loaded = state
        self._entries, self._loaded_eps = dict(entries), loaded

    @contextlib.contextmanager
    def temporary(self, entries: Mapping[str, Entry] | None = None, /, **named: Entry) -> Iterator[Registry]:
        """Register entries for the duration of a `with` block only (names with dashes go in
        `entries`): `with REGISTRY.temporary({"fake-qa": "tests.fakes:FakeQA"}): ...`."""
        state = self.snapshot()
        try:
            for name, target in {**(entries or {}), **named}.items():
                self.register(name, target)
            yield self
        finally:
            self.restore(state)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def _entry(self, name: str) -> Entry:
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}. "
                f"(`audiochat-bench list` shows them all.)"
            )
        return self._entries[name]

    def target(self, name: str) -> str:
        """What `name` refers to, readably: "module:attr", or "module:attr(key='value', ...)" for a
        configured entry. Raises RegistryError (with close matches) for an unknown name."""
        entry = self._entry(name)
        if isinstance(entry, str):
            return entry
        path, kwargs = entry
        return f"{path}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"

    def get(self, name: str) -> Any:
        """Import and return the object registered as `name`; for a configured entry, a factory
        that calls it with the entry's kwargs (and whatever further arguments it is given)."""
        entry = self._entry(name)
        path, kwargs = (entry, None) if isinstance(entry, str) else entry
        module, _, attr = path.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if kwargs is None:
            return obj
        factory = functools.partial(obj, **kwargs)
        factory.__doc__ = obj.__doc__  # what `list` shows for a task that needs an argument
        return factory


def parse_list(value: str | None) -> list[str]:
    """'a,b, c' → ['a', 'b', 'c']; empty or None → []."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
