"""`torchrun --nnodes 2` with a working folder per node (as on two machines that share no filesystem):
only rank 0 opens the cache, the other rank keeps its own store and sends its records to rank 0; a
node killed mid-run, then the run resumed on another number of ranks, gives the uninterrupted table."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import dist
from bench.cache import OutputCache, Record
from bench.types import Generation

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests" / "cli_with_fakes.py")
# the same command line on every node; `runs` is each node's own folder (its working directory)
ARGS = ["run", "--systems", "fake,echo", "--tasks", "fake-qa", "--batch-size", "2", "--no-progress",
        "--output-dir", "runs"]
ANSWERED = {f"q{k}" for k in range(12) if k != 5}  # fake-qa's prompts; the 6th, 'FAIL-me', always fails
TIMEOUT = 240


def _rec(key, status="ok", text="hi"):
    g = Generation(text=text, seconds={"llm": 0.1}, tokens=2) if status == "ok" else None
    return Record(key, "sys", "fp", "t", "1", key, "clean", "{}", status, g, None if g else "boom")


def test_a_rank_store_merges_into_the_cache_and_a_failure_never_replaces_an_answer(tmp_path):
    main = OutputCache(tmp_path / "cache.sqlite")
    main.put_many([_rec("a", text="answer"), _rec("b", "failed")])
    left = OutputCache(dist.store_path(tmp_path / "cache.sqlite", 3))  # a rank this run does not have
    assert left.path.name == "cache.sqlite.rank3"
    left.put_many([_rec("a", "failed"), _rec("b", text="late answer"), _rec("c", text="new")])
    assert {r.key for r in left.records()} == {"a", "b", "c"}
    left.close()
    main.close()
    cache = dist.open_cache(tmp_path / "cache.sqlite", 0, 1)  # one process: merges the leftover store
    got = cache.get_many(["a", "b", "c"])
    assert got["a"].generation.text == "answer"  # ok, not replaced by the rank's failure
    assert got["b"].generation.text == "late answer" and got["c"].generation.text == "new"
    assert cache.count() == 3 and not list(tmp_path.glob("cache.sqlite.rank*"))
    cache.put_many([_rec("c", "failed")])  # the same rule for any write
    assert cache.done_keys(["c"]) == {"c"}
    cache.delete(["c"])
    assert cache.count() == 2
    cache.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(folder: Path, delay: float) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FAKE_LOG": str(folder / "gen.log"),
            "FAKE_DELAY": str(delay)}


def _node(folder: Path, rank: int, port: int, delay: float, *extra) -> subprocess.Popen:
    folder.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), SCRIPT, *ARGS, *extra]
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        return subprocess.Popen(cmd, cwd=folder, env=_env(folder, delay), stdout=out, stderr=err)


def _single(folder: Path, *args) -> Path:
    """A one-process run in `folder`; its run directory."""
    folder.mkdir(exist_ok=True)
    p = subprocess.run([sys.executable, SCRIPT, *args], cwd=folder, env=_env(folder, 0), capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr[-3000:]
    return folder / p.stdout.strip().splitlines()[-1]


def _wait(*procs: subprocess.Popen) -> list[int]:
    deadline = time.time() + TIMEOUT
    for p in procs:
        try:
            p.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a torchrun node did not finish in time")
    return [p.returncode for p in procs]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _ok(db: Path) -> set[str]:
    """The prompts of the fake system's ok outputs in a store (item fake-00k is prompt qk)."""
    if not db.exists():
        return set()
    with sqlite3.connect(db) as c:
        try:
            rows = c.execute("SELECT item_id FROM outputs WHERE system='fake' AND status='ok'").fetchall()
        except sqlite3.OperationalError:
            return set()
    return {f"q{int(i.rsplit('-', 1)[1])}" for (i,) in rows}


def _log(folder: Path) -> list[str]:
    f = folder / "gen.log"
    return f.read_text().splitlines() if f.exists() else []


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k != "run"} for l in (run_dir / "rows.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("resume", ["one-process", pytest.param("two-nodes", marks=pytest.mark.slow)])
def test_two_nodes_killed_mid_run_then_resumed(tmp_path, resume):
    """Node 1 is killed (SIGKILL) while the fake system generates, holding records it has not sent yet;
    node 0 stops at the next collective. Resumed as one process on node 0 (`--resume`: node 1 does not
    rejoin, so what only its store held is computed again) or as two nodes again (the same command:
    node 1 rejoins and sends its store at start-up, so only batches in flight are computed again).
    Either way the rows equal an uninterrupted run's and every output is in node 0's cache once."""
    a, b = tmp_path / "node0", tmp_path / "node1"
    cache, store = a / "runs" / "cache.sqlite", b / "runs" / "cache.sqlite.rank1"
    port = _port()
    nodes = [_node(a, 0, port, 1.0), _node(b, 1, port, 1.0)]
    deadline = time.time() + TIMEOUT
    while len(_ok(store)) < 2:  # after 1-2 of rank 1's 3 fake batches (rank 1 merges only after all 3)
        assert time.time() < deadline and nodes[1].poll() is None, (b / "stderr").read_text()[-3000:]
        time.sleep(0.02)
    for pid in _children(nodes[1].pid) + [nodes[1].pid]:  # the rank, then its torchrun agent: the machine dies
        os.kill(pid, signal.SIGKILL)
    rc0, rc1 = _wait(*nodes)
    assert rc0 != 0 and rc1 == -signal.SIGKILL
    run_dirs = [d for d in (a / "runs").iterdir() if d.is_dir()]
    assert len(run_dirs) == 1, (a / "stderr").read_text()[-3000:]
    # node 1 never saw the cache nor the run directory; it has its own store, which holds unsent records
    assert sorted(p.name for p in (b / "runs").iterdir() if not p.name.endswith(("-wal", "-shm"))) == [store.name]
    in_cache, in_store, log0, log1 = _ok(cache), _ok(store), _log(a), _log(b)
    assert in_store and not in_store & in_cache and in_cache | in_store < ANSWERED
    assert len(set(log0) - in_cache) <= 2 and len(set(log1) - in_store) <= 2  # at most a batch in flight each

    if resume == "one-process":  # 2 ranks → 1: node 0 alone finishes the run in its run directory
        run_dir = _single(a, "run", "--resume", str(run_dirs[0].relative_to(a)), "--no-progress")
        assert run_dir.resolve() == run_dirs[0].resolve()
        again = _log(a)[len(log0):]
        lost = set(log1) | (set(log0) - in_cache)  # all node 1 computed: its store is not seen again
        kept = in_cache
    else:  # 2 ranks → 2 (a new process each, node 1 with its store): the same command on both nodes
        port = _port()
        nodes = [_node(a, 0, port, 0), _node(b, 1, port, 0)]
        assert _wait(*nodes) == [0, 0], (a / "stderr").read_text()[-3000:] + (b / "stderr").read_text()[-3000:]
        run_dir = a / (a / "stdout").read_text().strip().splitlines()[-1]
        again = _log(a)[len(log0):] + _log(b)[len(log1):]
        lost = (set(log1) - in_store) | (set(log0) - in_cache)  # only the batches in flight
        kept = in_cache | in_store
        assert not _ok(store)  # merged at start-up, then deleted from node 1's store
        assert sorted(p.name for p in (b / "runs").iterdir() if not p.name.endswith(("-wal", "-shm"))) == [store.name]
    # computed again: exactly what never reached node 0's cache (and each once); nothing it held
    assert sorted(again) == sorted(ANSWERED - kept)
    assert set(again) & (set(log0) | set(log1)) == lost
    with sqlite3.connect(cache) as c:
        stored = c.execute("SELECT system, item_id, condition FROM outputs").fetchall()
    assert len(stored) == len(set(stored)) == 24  # fake and echo × 12 items, each once (FAIL-me as failed)
    assert not list(a.glob("runs/*.rank*"))  # node 0 ran only rank 0

    reference = _single(tmp_path / "single", *ARGS)
    assert _rows(run_dir) == _rows(reference) and _rows(reference)
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["status"] == "finished"  # echo's 12 are new, FAIL-me is retried
    assert meta["counts"] == {"generated": 12 + len(ANSWERED - kept), "cached": len(kept), "failed": 1}
