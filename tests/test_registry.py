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
