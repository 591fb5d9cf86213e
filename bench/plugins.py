"""Where the harness finds its plug-ins: registries declared by the `systems` and `tasks` packages
(by module name, imported lazily), plus third-party entry points. This file is the only place in
`bench` that names those packages, and it names only them: what it asks of a plug-in package goes
through that package's registries (`REGISTRY`, `TOOLS`, ...), never a module inside it.
"""
from __future__ import annotations

import copy
import functools
import importlib
from typing import Any, Callable

from bench.registry import Registry, RegistryError


def systems() -> Registry:
    """The systems registry, where a family entry also answers `FAMILY:ARG` names (see `family`)."""
    return _Families(importlib.import_module("systems").REGISTRY)


def family(about: str):
    """Declare a system family: `NAME:ARG` (e.g. `hf-audio:Qwen/Qwen2-Audio-7B-Instruct`) builds
    `factory(ctx, arg=ARG)`, and the system's name is the whole string, so rows and cache keys keep
    the members apart. `about` says what ARG is, for `list` and errors."""
    def mark(factory):
        factory.family_arg = about
        return factory
    return mark


def family_arg(name: str) -> str | None:
    """What ARG means for the family registered as `name` (None: not a family)."""
    return getattr(systems().get(name), "family_arg", None)


class _Families:
    """A view of a Registry in which `FAMILY:ARG` resolves to the family's factory with ARG bound
    (exact names still win); everything else is the registry's own."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getattr__(self, attr):
        return getattr(self._registry, attr)

    def _split(self, name: str) -> tuple[str, str | None]:
        base, sep, arg = name.partition(":")
        if not sep or name in self._registry.names():
            return name, None
        if not getattr(self._registry.get(base), "family_arg", None):  # unknown base: "did you mean"
            raise RegistryError(f"system {base!r} takes no ':ARG' (in {name!r}); only families do: "
                                + ", ".join(n + ":ARG" for n in self._registry.names()
                                            if getattr(self._registry.get(n), "family_arg", None)))
        if not arg:
            raise RegistryError(f"system {name!r}: write {base}:ARG ({self._registry.get(base).family_arg})")
        return base, arg

    def target(self, name: str) -> str:
        base, arg = self._split(name)
        return self._registry.target(base) + (f"[{arg}]" if arg is not None else "")

    def get(self, name: str):
        base, arg = self._split(name)
        factory = self._registry.get(base)
        return factory if arg is None else functools.partial(factory, arg=arg)


def tasks() -> Registry:
    return importlib.import_module("tasks").REGISTRY


def trainers() -> Registry:
    return importlib.import_module("systems").TRAINERS


def data_tools() -> Registry:
    return importlib.import_module("systems").DATA_TOOLS


def tools() -> Registry:
    """Other commands a plug-in package offers (the LLM speed benchmark behind `perf`)."""
    return importlib.import_module("systems").TOOLS


def task_tools() -> Registry:
    """What the tasks package offers besides tasks: suites, task kinds, the public benchmarks."""
    return importlib.import_module("tasks").TOOLS


def suites() -> dict[str, dict]:
    return task_tools().get("suites")


def suite_from_file(path: str) -> dict:
    """A user's suite file (TOML, the format of the built-in ones)."""
    return task_tools().get("suite-file")(path)


def aliases() -> dict[str, dict]:
    """Older command-line flags that stand for per-system arguments, as the systems package declares
    them: {flag: {"help", "targets": [(system, key)], "value": constant or None (the flag takes one)}}."""
    return getattr(importlib.import_module("systems"), "ARG_ALIASES", {})


class Context:
    """Options and shared resources for building systems, so that (for example) the topline and
    the cascade share one loaded LLM. `options` are the run's shared ones (LLM, device, answer
    length); `args` are the system's own (`--system-args`), already checked against its declaration."""

    def __init__(self, **options: Any):
        self.options = options
        self.args: dict[str, str] = {}
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]

    def for_system(self, args: dict[str, str]) -> "Context":
        """The same options and shared resources, with one system's own arguments."""
        view = copy.copy(self)
        view.args = dict(args)
        return view


def takes(**keys: str):
    """Declare the arguments a system factory takes (key → what it means), for `--system-args`,
    `list` and the error that names the allowed keys."""
    def mark(factory):
        factory.arg_specs = keys
        return factory
    return mark


def system_arg_specs(name: str) -> dict[str, str]:
    """The arguments system `name` declares (a configured registry entry declares its function's)."""
    factory = systems().get(name)
    return dict(getattr(factory, "arg_specs", None) or getattr(getattr(factory, "func", None), "arg_specs", {}))


def check_system_args(name: str, args: dict[str, str]) -> None:
    allowed = system_arg_specs(name)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(f"system {name!r} takes no argument {unknown[0]!r}; it takes: "
                         + (", ".join(allowed) if allowed else "none"))


def build_system(name: str, ctx: Context, args: dict[str, str] | None = None):
    check_system_args(name, args or {})
    factory = systems().get(name)
    if getattr(factory, "family_arg", None):  # the family's bare name, without its ARG
        raise ValueError(f"system {name!r} is a family: write {name}:ARG ({factory.family_arg})")
    system = factory(ctx.for_system(args or {}))
    system.name = name
    return system


def alias_args(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per-system arguments from the values of alias flags (`{flag: value}`; None or False: not given)."""
    out: dict[str, dict[str, str]] = {}
    for flag, spec in aliases().items():
        v = values.get(flag)
        if v is None or v is False:
            continue
        value = spec["value"] if "value" in spec else v
        for system, key in spec["targets"]:
            out.setdefault(system, {})[key] = str(value)
    return out


def legacy_system_args(saved: dict) -> dict[str, dict[str, str]]:
    """Per-system arguments of a config saved before they existed, when they were top-level options
    (`asr`, `e2e`, `transcript_warning`, ...): each alias names the option it replaced (`legacy`)."""
    values: dict[str, Any] = {}
    for flag, spec in aliases().items():
        old = spec.get("legacy", flag)
        if saved.get(old) is None:
            continue
        values[flag] = saved[old] == spec["legacy_when"] if "value" in spec else saved[old]
    return alias_args(values)


def build_task(name: str, **kwargs):
    """A task by name; `name:ARG` passes ARG to the task's constructor (e.g. `manifest:data/my.jsonl`)."""
    base, _, arg = name.partition(":")
    return tasks().get(base)(*([arg] if arg else []), **kwargs)


def task_kind(task) -> tuple[str, str | None]:
    """(kind, target language) that a task's items are scored as (`qa`, `asr`, `translate`, ...): what
    `data export` writes in a manifest's header, so that `manifest:PATH` scores it the same way."""
    return task_tools().get("kind-of")(task)


def task_data_kwargs(name: str, data_dir: str | None) -> dict:
    """{"data_dir": data_dir} for a task whose constructor takes one (the public benchmarks, which
    read local copies from it), else {}: other tasks never see the option."""
    import inspect

    if not data_dir:
        return {}
    params = inspect.signature(tasks().get(name.partition(":")[0])).parameters
    return {"data_dir": data_dir} if "data_dir" in params else {}


def benchmarks(data_dir: str | None = None) -> list[tuple[str, Any, str | None]]:
    """The public benchmarks the tasks package reads by name: (name, its description, where it is
    available without the hub, or None)."""
    return task_tools().get("benchmarks")(data_dir)
