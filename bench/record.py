"""The run record: a run directory's `config.json`, what `score`, `report` and `--resume` read back.

A typed, versioned record (inspect_ai's `EvalLog` is the model): the plan as it was asked (`config`,
never changed by what happens to the run), the environment, where the run stands (`status`: running,
finished or failed, with the `error` that stopped it) and what it produced (fingerprints, skips,
counts, the judge's tally, metric signatures). `RunLog` is its one writer.

Records written before the version field existed (plain dicts, version 1) read as they are: every
key they lack takes its default, and keys this version does not know are kept and written back.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from bench.config import environment

VERSION = 2
RUNNING, FINISHED, FAILED = "running", "finished", "failed"


def describe_error(e: BaseException) -> str:
    """`Type: first line of the message`, at most 500 characters (a record or a row, not a traceback)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500] if msg else type(e).__name__


@dataclass
class RunRecord:
    """What a run was asked, in which environment, where it stands and what it produced."""

    config: dict  # the plan as asked (`asdict(plan)`)
    version: int = VERSION
    status: str = RUNNING
    error: str | None = None  # why a failed run stopped (`describe_error`)
    # the environment (bench.config.environment)
    python: str | None = None
    platform: str | None = None
    packages: dict = field(default_factory=dict)
    git_sha: str | None = None
    started: str | None = None
    cache_path: str | None = None
    world_size: int = 1
    # what the run produced
    reference_fingerprints: dict = field(default_factory=dict)  # scoring tasks' reference system → fingerprint
    fingerprints: dict = field(default_factory=dict)  # system → fingerprint, of the systems that ran
    skipped: dict = field(default_factory=dict)  # optional system → why it was skipped
    counts: dict = field(default_factory=dict)  # generated / cached / failed outputs
    seconds: float | None = None  # generation's wall time
    judge: dict | None = None  # bench.judge.run_judge's tally
    metric_signatures: dict = field(default_factory=dict)  # how corpus metrics were computed
    extra: dict = field(default_factory=dict)  # keys of another version, kept as they were

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        """A record of any version: the old untyped dict (no `version`) reads as version 1."""
        if "config" not in d:
            raise ValueError("not a run record: no `config`")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        known.setdefault("version", 1)
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


def read_record(run_dir: str | Path) -> RunRecord:
    """The record of a run directory (any version)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    return RunRecord.from_dict(json.loads(path.read_text()))


class RunLog:
    """The one writer of a run's record. `update` changes fields and writes the file at once (a
    killed run leaves what it had reached); `running()` brackets a run: the record says running,
    then finished, or failed with the error on any exception, Ctrl-C included. `write` False (torchrun
    ranks other than 0, which never write the run directory): the record is kept in memory only."""

    def __init__(self, run_dir: Path, record: RunRecord, write: bool = True):
        self.run_dir, self.record, self.write = Path(run_dir), record, write

    def update(self, **changes: Any) -> None:
        for k, v in changes.items():
            if not hasattr(self.record, k) or k == "extra":
                raise AttributeError(f"a run record has no field {k!r}")
            setattr(self.record, k, v)
        if self.write:
            (self.run_dir / "config.json").write_text(json.dumps(self.record.to_dict(), indent=2, default=str))

    @contextmanager
    def running(self) -> Iterator["RunLog"]:
        self.update(status=RUNNING, error=None, version=VERSION)
        try:
            yield self
        except BaseException as e:  # KeyboardInterrupt and SystemExit too: the record must not say running
            self.update(status=FAILED, error=describe_error(e))
            raise
        self.update(status=FINISHED)


def new_record(plan, cache_path: Path, world: int) -> RunRecord:
    """A fresh run's record: a copy of the plan (what the run was asked) and the environment."""
    return RunRecord(config=asdict(plan), **environment(),
                     cache_path=str(Path(cache_path).resolve()), world_size=world)
