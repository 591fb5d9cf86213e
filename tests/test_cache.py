import pytest

from bench.cache import CacheError, OutputCache, Record, cache_key
from bench.types import Generation

BASE = dict(fingerprint="fp-A", task="spoken-qa", task_version="1", item_id="qa-000", condition="clean",
            gen_config={"max_new_tokens": 64, "greedy": True})


@pytest.mark.parametrize("field,other", [
    ("fingerprint", "fp-B"),  # another checkpoint
    ("task", "asr"), ("task_version", "2"), ("item_id", "qa-001"), ("condition", "snr10"),
    ("gen_config", {"max_new_tokens": 32, "greedy": True}),  # another decoding config
])
def test_every_key_field_changes_the_key(field, other):
    assert cache_key(**BASE) != cache_key(**{**BASE, field: other})
    assert cache_key(**BASE) == cache_key(**dict(BASE))


def test_system_fingerprint_tracks_weights_and_decoding(tiny):
    from systems.llm import DecodeConfig
    from systems.text import TextTopline
    from tests.fakes import tiny_llm

    a = TextTopline(tiny, DecodeConfig(64)).fingerprint()
    assert a == TextTopline(tiny, DecodeConfig(64)).fingerprint()
    assert a != TextTopline(tiny, DecodeConfig(32)).fingerprint()
    assert a != TextTopline(tiny_llm(seed=1), DecodeConfig(64)).fingerprint()


def test_weights_identity_changes_with_the_weights(tmp_path, monkeypatch):
    from systems.llm import weights_identity

    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "c"))
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights-1")
    (d / "config.json").write_text("{}")
    first = weights_identity(d)
    assert weights_identity(d) == first
    (d / "model.safetensors").write_bytes(b"weights-2")
    assert weights_identity(d) != first


def _rec(key, status="ok", text="hi"):
    g = Generation(text=text, seconds={"llm": 0.1}, tokens=2) if status == "ok" else None
    return Record(key, "sys", "fp", "t", "1", key, "clean", "{}", status, g, None if g else "boom")


def test_roundtrip_done_and_failed(tmp_path):
    c = OutputCache(tmp_path / "c.sqlite")
    c.put_many([_rec("a"), _rec("b", "failed")])
    assert c.done_keys(["a", "b", "c"]) == {"a"}  # failed items are retried, not treated as done
    got = c.get_many(["a", "b"])
    assert got["a"].generation.text == "hi" and got["a"].generation.seconds == {"llm": 0.1}
    assert got["b"].generation is None and got["b"].error == "boom"
    c.put_many([_rec("b", text="fixed")])  # a retry replaces the failure
    assert c.done_keys(["b"]) == {"b"} and c.count() == 2
    c.close()
    assert OutputCache(tmp_path / "c.sqlite").done_keys(["a", "b"]) == {"a", "b"}


def test_corrupt_cache_is_a_clear_error(tmp_path):
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match="cannot be used"):
        OutputCache(p)
