"""The run record: a run directory's `config.json`, what `score`, `report` and `--resume` read back.

A typed, versioned record (inspect_ai's `EvalLog` is the model): the plan as it was asked (`config`,
never changed by what happens to the run), the environment, where the run stands (`status`: running,
finished or failed, with the `error` that stopped it) and what it produced (fingerprints, skips,
counts, the judge's tally, metric signatures). `RunLog` is its one writer.

A run stopped by Ctrl-C or SIGTERM writes failed itself. One killed outright (SIGKILL, the machine's
memory killer) cannot, so the record names the process that runs it (`pid` on `host`), and
`read_record` reads a record that says running while that process is gone from this host as failed
("the process ended without finishing").

Records written before the version field existed (plain dicts, version 1) read as they are: every
key they lack takes its default, and keys this version does not know are kept and written back.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from bench.config import environment

VERSION = 2
RUNNING, FINISHED, FAILED = "running", "finished", "failed"
GONE = "the process ended without finishing"


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler, torchrun stopping its workers) during a run: handled as Ctrl-C is."""


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
    pid: int | None = None  # the process running it (the last one, for a resumed run)...
    host: str | None = None  # ...on this host (socket.gethostname())
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
    decoding: dict = field(default_factory=dict)  # task → its generation config (answer length, stop strings)
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
    """The record of a run directory (any version). One that says running while its process is gone
    from this host (killed with no chance to write) reads failed, with the error `GONE`."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    record = RunRecord.from_dict(json.loads(path.read_text()))
    if record.status == RUNNING and record.pid and record.host == socket.gethostname() and process_gone(record.pid):
        record.status, record.error = FAILED, f"{GONE} (pid {record.pid})"
    return record


def process_gone(pid: int) -> bool:
    """Whether process `pid` of this host has ended (a zombie, ended but not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: there
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill(0) answered, so there
        return False


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within it, SIGTERM raises `Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt (so
    the run's `finally` blocks and its record see it); elsewhere, or outside it, SIGTERM is as it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class RunLog:
    """The one writer of a run's record. `update` changes fields and writes the file at once (a
    killed run leaves what it had reached); `running()` brackets a run: the record says running (with
    this process and host), then finished, or failed with the error on any exception, Ctrl-C and
    SIGTERM included. `write` False (torchrun
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
        self.update(status=RUNNING, error=None, version=VERSION, pid=os.getpid(), host=socket.gethostname())
        try:
            with sigterm_interrupts():
                yield self
        except BaseException as e:  # KeyboardInterrupt and SystemExit too: the record must not say running
            self.update(status=FAILED, error=describe_error(e))
            raise
        self.update(status=FINISHED)


def new_record(plan, cache_path: Path, world: int) -> RunRecord:
    """A fresh run's record: a copy of the plan (what the run was asked) and the environment."""
    return RunRecord(config=asdict(plan), **environment(),
                     cache_path=str(Path(cache_path).resolve()), world_size=world)
