import sys

import pytest

from bench.registry import Registry, RegistryError, parse_list


def test_unknown_name_suggests_close_match():
    reg = Registry("system", {"text": "json:dumps", "cascade": "json:loads"})
    with pytest.raises(RegistryError) as e:
        reg.get("txt")
    msg = str(e.value)
    assert "unknown system 'txt'" in msg and "Did you mean 'text'" in msg and "cascade" in msg


def test_unknown_name_without_close_match_lists_known():
    reg = Registry("task", {"spoken-qa": "json:dumps"})
    with pytest.raises(RegistryError) as e:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(e.value) and "spoken-qa" in str(e.value)


def test_lazy_import():
    reg = Registry("thing", {"x": "tests._lazy_target:VALUE"})
    sys.modules.pop("tests._lazy_target", None)
    assert reg.names() == ["x"] and "tests._lazy_target" not in sys.modules
    assert reg.get("x") == 42 and "tests._lazy_target" in sys.modules


def test_builtin_registries_resolve():
    import systems
    import tasks

    assert "text" in systems.REGISTRY.names()
    assert tasks.REGISTRY.get("spoken-qa")().name == "spoken-qa"


def test_parse_list():
    assert parse_list(" a, b,,c ") == ["a", "b", "c"] and parse_list(None) == []


def test_configured_entry_is_a_factory_with_its_kwargs():
    reg = Registry("thing", {"plain": "json:dumps", "compact": ("json:dumps", {"separators": (",", ":")})})
    assert reg.get("plain") is __import__("json").dumps
    assert reg.get("compact")({"a": [1, 2]}) == '{"a":[1,2]}'  # further arguments pass through
    assert reg.get("compact")({"a": 1}, sort_keys=True) == '{"a":1}'
    assert reg.target("plain") == "json:dumps"
    assert reg.target("compact") == "json:dumps(separators=(',', ':'))"
    assert reg.get("compact").__doc__ == __import__("json").dumps.__doc__  # what `list` shows


def test_registered_kwargs_are_copied_and_bad_entries_refused():
    kwargs = {"indent": 2}
    reg = Registry("thing", {})
    reg.register("pretty", ("json:dumps", kwargs))
    kwargs["indent"] = 8
    assert reg.get("pretty")([1]) == "[\n  1\n]"
    with pytest.raises(TypeError, match="module:attr"):
        reg.register("bad", ("json:dumps", "indent=2"))
    with pytest.raises(TypeError, match="module:attr"):
        Registry("thing", {"bad": ["json:dumps"]})


def test_snapshot_restore_and_temporary():
    reg = Registry("thing", {"a": "json:dumps"})
    state = reg.snapshot()
    reg.register("a", "json:loads")
    reg.register("b", "json:loads")
    reg.restore(state)
    assert reg.names() == ["a"] and reg.target("a") == "json:dumps"
    with reg.temporary({"c-d": "json:loads"}, a="os:getcwd") as r:
        assert r is reg and reg.names() == ["a", "c-d"] and reg.target("a") == "os:getcwd"
    assert reg.names() == ["a"] and reg.target("a") == "json:dumps"
    with pytest.raises(RuntimeError), reg.temporary(e="json:loads"):
        raise RuntimeError("restored even when the block fails")
    assert reg.names() == ["a"]


def test_a_registered_fake_leaks_into_no_other_test():
    """What a test registers is undone after it (conftest's autouse fixture), checked within one test
    so that it holds whichever tests run and in whatever order."""
    import systems
    import tasks
    from tests.conftest import registries_kept

    regs = (systems.REGISTRY, tasks.REGISTRY, systems.TRAINERS)
    with registries_kept():
        systems.REGISTRY.register("leak-check", "tests.fakes:build_fake")
        tasks.REGISTRY.register("leak-check", "tests.fakes:FakeQA")
        systems.TRAINERS.register("leak-check", "json:dumps")
        assert all("leak-check" in reg.names() for reg in regs)
    assert not any("leak-check" in reg.names() for reg in regs)


def test_builtin_task_names_are_their_tasks_names():
    import tasks
    from bench.plugins import build_task

    for n in tasks.REGISTRY.names():
        if not tasks.needs_argument(n):
            assert build_task(n).name == n
    assert tasks.REGISTRY.target("translate-en-de") == "tasks.builtin:Translation(target='de')"
    assert tasks.REGISTRY.target("asr-ljspeech") == "tasks.builtin:RealASR(dataset='ljspeech')"
    assert [n for n in tasks.REGISTRY.names() if tasks.needs_argument(n)] == [
        "covost2", "fleurs", "heysquad", "hf", "librispeech", "manifest", "nq-open", "scitldr", "squad", "voicebench"]
