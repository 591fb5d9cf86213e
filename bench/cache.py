"""The output store: SQLite in WAL mode, one row per (system fingerprint, task, item, condition,
generation config), committed per batch. A run that is killed loses at most the batch in flight;
rerunning skips every key already stored as `ok`. A `failed` record never replaces an `ok` one (a
late or merged failure cannot undo an answer); anything else replaces what the key held.

Every row stores all of its key fields, so nothing is ever parsed back out of a key or file name.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from bench.types import Generation

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    key TEXT PRIMARY KEY,
    system TEXT NOT NULL, fingerprint TEXT NOT NULL,
    task TEXT NOT NULL, task_version TEXT NOT NULL,
    item_id TEXT NOT NULL, condition TEXT NOT NULL, gen_config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    text TEXT, transcript TEXT, seconds TEXT NOT NULL, tokens INTEGER NOT NULL, nll REAL,
    error TEXT, created REAL NOT NULL
);
"""


_COLUMNS = ("key", "system", "fingerprint", "task", "task_version", "item_id", "condition", "gen_config",
            "status", "text", "transcript", "seconds", "tokens", "nll", "error", "created")
# INSERT OR REPLACE, except that a failed record leaves an ok one in place
_UPSERT = (f"INSERT INTO outputs VALUES ({','.join('?' * len(_COLUMNS))}) ON CONFLICT(key) DO UPDATE SET "
           + ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS[1:])
           + " WHERE excluded.status='ok' OR outputs.status='failed'")


class CacheError(RuntimeError):
    """The cache cannot be used safely; the message says what to do."""


def cache_key(fingerprint: str, task: str, task_version: str, item_id: str, condition: str,
              gen_config: Mapping) -> str:
    parts = [fingerprint, task, task_version, item_id, condition,
             json.dumps(dict(gen_config), sort_keys=True)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    key: str
    system: str
    fingerprint: str
    task: str
    task_version: str
    item_id: str
    condition: str
    gen_config: str
    status: str
    generation: Generation | None
    error: str | None


class OutputCache:
    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise CacheError(f"{self.path}: cache schema {row[0]}, this version needs "
                                 f"{SCHEMA_VERSION}; use another --cache path")
            self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as e:
            raise CacheError(
                f"{self.path}: the output cache cannot be used ({e}). If it is corrupt, move it away "
                "and rerun (outputs will be regenerated); if it is locked, wait for the other run "
                "or pass another --cache path."
            ) from e

    def close(self) -> None:
        self.db.close()

    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """The subset of `keys` stored with status ok."""
        keys = list(keys)
        done: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key FROM outputs WHERE status='ok' AND key IN ({','.join('?' * len(chunk))})"
            done.update(r[0] for r in self.db.execute(q, chunk))
        return done

    def put_many(self, records: Iterable[Record]) -> None:
        """Store a batch atomically (one transaction); a failed record leaves an ok one in place."""
        rows = []
        for r in records:
            g = r.generation
            rows.append((r.key, r.system, r.fingerprint, r.task, r.task_version, r.item_id, r.condition,
                         r.gen_config, r.status, g.text if g else None, g.transcript if g else None,
                         json.dumps(g.seconds if g else {}), g.tokens if g else 0, g.nll if g else None,
                         r.error, time.time()))
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(_UPSERT, rows)
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise CacheError(f"{self.path}: could not write outputs ({e}); is another process holding "
                             "a write lock for longer than the timeout?") from e

    def get_many(self, keys: Iterable[str]) -> dict[str, Record]:
        keys = list(keys)
        out: dict[str, Record] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT * FROM outputs WHERE key IN ({','.join('?' * len(chunk))})"
            for row in self.db.execute(q, chunk):
                out[row[0]] = _record(row)
        return out

    def records(self) -> list[Record]:
        """Every stored record (a torchrun rank's own store, to send to rank 0: bench.dist)."""
        return [_record(row) for row in self.db.execute("SELECT * FROM outputs ORDER BY created")]

    def delete(self, keys: Iterable[str]) -> None:
        """Forget `keys` (what rank 0 has merged from this rank's store), in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("DELETE FROM outputs WHERE key=?", [(k,) for k in keys])
        self.db.execute("COMMIT")

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]


def _record(row: tuple) -> Record:
    (key, system, fp, task, tv, item_id, cond, gc, status, text, transcript, seconds, tokens, nll, error,
     _created) = row
    gen = Generation(text, transcript, json.loads(seconds), tokens, nll) if status == "ok" else None
    return Record(key, system, fp, task, tv, item_id, cond, gc, status, gen, error)
