"""Runner and CLI with a fake system: outputs, caching, failures, resume after SIGKILL, rescoring."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, tmp_path, *extra):
    rc = main(["run", "--systems", "fake,echo", "--tasks", "fake-qa", "--output-dir", str(tmp_path),
               "--batch-size", "4", "--no-progress", *extra])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    return Path(out[-1]), out


def _rows(run_dir):
    return [json.loads(l) for l in (run_dir / "rows.jsonl").read_text().splitlines()]


def test_run_writes_tables_and_records_failures(capsys, tmp_path, fakes_registered, monkeypatch):
    log = tmp_path / "gen.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    run_dir, out = _run(capsys, tmp_path)
    assert run_dir.parent == tmp_path and run_dir.is_dir()
    for f in ("rows.jsonl", "table.md", "table.csv", "config.json", "outputs.jsonl"):
        assert (run_dir / f).exists(), f
    rows = {(r["system"], r["metric"]): r for r in _rows(run_dir)}
    for k in ("system", "task", "condition", "metric", "value", "ci_low", "ci_high", "n", "git_sha", "config_hash"):
        assert k in rows[("fake", "accuracy")]
    # the FAIL item failed for the fake system only (batch-mates still answered), and the run went on
    assert rows[("fake", "accuracy")]["n"] == 11 and rows[("fake", "accuracy")]["n_failed"] == 1
    assert rows[("fake", "accuracy")]["value"] == 1.0
    assert rows[("echo", "accuracy")]["n"] == 12 and rows[("echo", "accuracy")]["value"] == 0.0
    assert rows[("fake", "agree_echo")]["value"] == 0.0 and rows[("echo", "agree_echo")]["value"] == 1.0
    assert any("1 output(s) failed" in l for l in out)
    failed = [json.loads(l) for l in (run_dir / "outputs.jsonl").read_text().splitlines()]
    failed = [o for o in failed if o["status"] == "failed"]
    assert len(failed) == 1 and "cannot answer" in failed[0]["error"]
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["status"] == "finished" and meta["packages"]["torch"] and "seed" in meta["config"]
    assert meta["decoding"] == {"fake-qa": {"max_new_tokens": 64, "greedy": True}}  # each task's, in the record
    assert set(meta["fingerprints"]) == {"fake", "echo"}
    assert "| fake |" in (run_dir / "table.md").read_text()
    first = log.read_text().splitlines()

    # second run: everything served from the cache except the failed item, which is retried
    run2, _ = _run(capsys, tmp_path)
    assert log.read_text().splitlines()[len(first):] == []  # the retried FAIL item raises before logging
    assert [r["value"] for r in _rows(run2)] == [r["value"] for r in _rows(run_dir)]
    assert json.loads((run2 / "config.json").read_text())["counts"] == {"generated": 0, "cached": 23, "failed": 1}


def test_decoding_config_change_is_not_served_from_cache(capsys, tmp_path, fakes_registered, monkeypatch):
    log = tmp_path / "gen.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    _run(capsys, tmp_path)
    n = len(log.read_text().splitlines())
    run2, _ = _run(capsys, tmp_path, "--max-new-tokens", "7")
    assert len(log.read_text().splitlines()) == 2 * n  # everything regenerated under the new config


def test_score_and_report_rebuild_from_stored_outputs(capsys, tmp_path, fakes_registered):
    run_dir, _ = _run(capsys, tmp_path)
    before = (run_dir / "rows.jsonl").read_text()
    (run_dir / "rows.jsonl").unlink()
    (run_dir / "table.md").unlink()
    import systems  # scoring must not build any system
    systems.REGISTRY.register("fake", "tests.fakes:no_such_factory")  # undone after the test (conftest)
    assert main(["score", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "rows.jsonl").read_text() == before
    (run_dir / "table.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "table.md").exists()


def test_cli_errors_are_clear(capsys, tmp_path, fakes_registered):
    assert main(["run", "--systems", "fak", "--tasks", "fake-qa", "--output-dir", str(tmp_path)]) == 2
    assert "Did you mean 'fake'" in capsys.readouterr().err
    assert main(["run", "--suite", "smoek", "--output-dir", str(tmp_path)]) == 2
    assert "Did you mean 'smoke'" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_list_shows_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("systems:", "text", "tasks:", "spoken-qa", "suites:", "smoke", "conditions:", "clean"):
        assert word in out


def test_a_reader_that_leaves_early_is_no_error():
    """`audiochat-bench list | head -1`: the pipe closes before the CLI writes; it stops quietly."""
    proc = subprocess.Popen([sys.executable, "-c", "from bench.cli import main; raise SystemExit(main(['list']))"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has started: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


CHILD = """
import sys
from tests.fakes import register, register_task
register(); register_task()
from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(tmp_path, env, *extra):
    args = [sys.executable, "-c", CHILD, "run", "--systems", "fake", "--tasks", "fake-qa",
            "--output-dir", str(tmp_path / "runs"), "--batch-size", "2", "--no-progress", *extra]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stored(db):
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        try:
            return c.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_resume_after_sigkill_of_a_real_child_run(tmp_path):
    """Kill a real run mid-way; rerunning finishes it with no output lost or stored twice, and the
    rows equal those of an uninterrupted run."""
    env = {**os.environ, "FAKE_DELAY": "0.3", "FAKE_LOG": str(tmp_path / "gen.log"),
           "PYTHONPATH": str(ROOT)}
    db = tmp_path / "runs" / "cache.sqlite"
    proc = _child(tmp_path, env)
    deadline = time.time() + 60
    while _stored(db) < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _stored(db)
    with sqlite3.connect(db) as c:
        ok_at_kill = c.execute("SELECT COUNT(*) FROM outputs WHERE status='ok'").fetchone()[0]
    assert 4 <= killed_at < 12, "the kill should land mid-run"

    proc = _child(tmp_path, {**env, "FAKE_DELAY": "0"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    with sqlite3.connect(db) as c:
        ids = [r[0] for r in c.execute("SELECT item_id FROM outputs")]
    assert len(ids) == len(set(ids)) == 12  # every item stored exactly once (11 ok + 1 failed)
    counts = json.loads((run_dir / "config.json").read_text())["counts"]
    assert counts["cached"] == ok_at_kill and counts["generated"] == 11 - ok_at_kill  # nothing redone

    # an uninterrupted run in a fresh directory gives the same rows
    fresh = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-c", CHILD, "run", "--systems", "fake", "--tasks", "fake-qa",
                           "--output-dir", str(fresh), "--no-progress"], cwd=ROOT, env={**env, "FAKE_DELAY": "0"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fresh_dir = Path(proc.stdout.strip().splitlines()[-1])
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("run",)} for r in _rows(d)]
    assert strip(run_dir) == strip(fresh_dir)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_table(tmp_path):
    """2 CPU ranks on gloo share the items and one SQLite cache; rank 0 reports; the rows equal a
    single-process run's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FAKE_LOG": str(tmp_path / "gen.log")}
    script = str(ROOT / "tests" / "cli_with_fakes.py")
    args = ["run", "--systems", "fake,echo", "--tasks", "fake-qa,spoken-qa", "--limit", "10",
            "--conditions", "clean,white-snr5", "--batch-size", "2", "--no-progress"]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            script, *args, "--output-dir", str(tmp_path / "multi")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    single = subprocess.run([sys.executable, script, *args, "--output-dir", str(tmp_path / "single")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    dirs = [Path(p.stdout.strip().splitlines()[-1]) for p in (multi, single)]
    strip = lambda d: [{k: v for k, v in r.items() if k != "run"} for r in _rows(d)]
    assert strip(dirs[0]) == strip(dirs[1]) and strip(dirs[0])
    meta = json.loads((dirs[0] / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["counts"]["generated"] + meta["counts"]["failed"] == 2 * 2 * 20
    # each fake item was generated once across both ranks (the FAIL item raises before logging)
    lines = (tmp_path / "gen.log").read_text().splitlines()
    assert len(lines) == 2 * (2 * 20 - 2)  # two runs × (items × conditions − the failing item twice)


@pytest.mark.slow
def test_repeated_sigkills_at_random_points_lose_and_duplicate_nothing(tmp_path):
    """Kill a real run five times at random moments (seeded), resuming each time; the final rows
    equal an uninterrupted run's and every output is stored exactly once."""
    import random

    rng = random.Random(7)
    env = {**os.environ, "FAKE_DELAY": "0.15", "PYTHONPATH": str(ROOT)}
    db = tmp_path / "runs" / "cache.sqlite"
    kills = 0
    for _ in range(5):
        proc = _child(tmp_path, env, "--conditions", "clean,white-snr5")
        time.sleep(rng.uniform(0.5, 2.5))  # process start-up included: some kills land before any output
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    proc = _child(tmp_path, {**env, "FAKE_DELAY": "0"}, "--conditions", "clean,white-snr5")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with sqlite3.connect(db) as c:
        keys = [r[0] for r in c.execute("SELECT key FROM outputs")]
    assert len(keys) == len(set(keys)) == 24
    fresh = subprocess.run([sys.executable, "-c", CHILD, "run", "--systems", "fake", "--tasks", "fake-qa",
                            "--conditions", "clean,white-snr5", "--output-dir", str(tmp_path / "fresh"), "--no-progress"],
                           cwd=ROOT, env={**env, "FAKE_DELAY": "0"}, capture_output=True, text=True, timeout=120)
    strip = lambda d: [{k: v for k, v in r.items() if k != "run"} for r in _rows(d)]
    assert strip(Path(out.strip().splitlines()[-1])) == strip(Path(fresh.stdout.strip().splitlines()[-1]))


def test_locked_cache_is_a_clear_error(tmp_path):
    from bench.cache import CacheError, OutputCache, Record
    from bench.types import Generation

    path = tmp_path / "c.sqlite"
    OutputCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        cache = OutputCache(path, timeout=0.2)
        with pytest.raises(CacheError, match="lock"):
            cache.put_many([Record("k", "s", "fp", "t", "1", "i", "clean", "{}", "ok", Generation("x"), None)])
    except CacheError as e:  # refusing to open while locked is just as clear
        assert "lock" in str(e)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_tasks_answer_length_reaches_the_system_and_the_cache_key(tmp_path):
    """A task that declares its answer length and stop strings: every system is asked for them in its
    requests, they are part of the output's cache key (a change generates again) and the run's cap still
    applies where smaller; a task that declares none keeps the keys it had."""
    from bench.cache import OutputCache
    from bench.runner import GenStats, gen_config, generate, slots_for, task_gen_config
    from tests.fakes import FakeQA, FakeSystem

    class ShortQA(FakeQA):
        max_new_tokens, stop = 8, ("\n",)

    class Recorder(FakeSystem):
        def generate_batch(self, requests):
            self.asked = [(r.max_new_tokens, r.stop) for r in requests]
            return super().generate_batch(requests)

    short, plain = ShortQA(4), FakeQA(4)
    assert task_gen_config(plain, 64) == gen_config(64) == {"max_new_tokens": 64, "greedy": True}
    assert task_gen_config(short, 64) == {"max_new_tokens": 8, "greedy": True, "stop": ["\n"]}
    assert task_gen_config(short, 4)["max_new_tokens"] == 4
    items = short.items()
    keys = lambda gconf: [s.key for s in slots_for("fp", short, items, ["clean"], gconf)]  # noqa: E731
    assert len({*keys(task_gen_config(short, 64)), *keys(task_gen_config(plain, 64)),
                *keys(task_gen_config(short, 4))}) == 3 * len(items)
    system, cache = Recorder(), OutputCache(tmp_path / "c.sqlite")
    gconf = task_gen_config(short, 64)
    generate(system, short, slots_for(system.fingerprint(), short, items, ["clean"], gconf), cache, gconf, 4,
             GenStats(), progress=False)
    assert system.asked == [(8, ("\n",))] * len(items)


def test_a_system_that_never_hears_the_audio_answers_an_item_once_across_audio_conditions(tmp_path):
    """The text topline reads transcripts: under conditions that change only the audio (noise, speed,
    another voice) its output is the clean one, generated once and stored under each condition's key
    (also when the clean output is already cached); a condition that changes the words (`wer20`) is
    generated on its own, and a system that hears generates every condition."""
    from bench import conditions
    from bench.cache import OutputCache
    from bench.runner import GenStats, gen_config, generate, read_records, slots_for
    from tests.fakes import FakeQA, FakeSystem

    class Counting(FakeSystem):
        def generate_batch(self, requests):
            self.calls = getattr(self, "calls", 0) + len(requests)
            return super().generate_batch(requests)

    class Deaf(Counting):
        hears_audio = False

    assert [conditions.audio_only(c) for c in ("clean", "white-snr5", "speed1.1", "voice-joe", "wer20")] == \
        [True, True, True, True, False]
    task, gconf = FakeQA(4), gen_config(64)
    items, conds = task.items(), ["white-snr5", "clean", "speed1.1", "wer20"]

    def run(system, cache, cs):
        stats = GenStats()
        generate(system, task, slots_for(system.fingerprint(), task, items, cs, gconf), cache, gconf, 3, stats,
                 progress=False)
        return stats, read_records(cache, slots_for(system.fingerprint(), task, items, cs, gconf))

    deaf, hearing = Deaf(), Counting()
    stats, recs = run(deaf, OutputCache(tmp_path / "a.sqlite"), conds)
    assert deaf.calls == 2 * len(items) and (stats.generated, stats.cached) == (8, 8)  # clean and wer20
    for it in items:
        texts = {c: recs[(c, it.id)].generation.text for c in conds}
        assert texts["white-snr5"] == texts["speed1.1"] == texts["clean"]
        assert recs[("speed1.1", it.id)].condition == "speed1.1"
    run(hearing, OutputCache(tmp_path / "b.sqlite"), conds)
    assert hearing.calls == 4 * len(items)
    later = Deaf()  # the clean outputs are stored: a new audio condition generates nothing
    stats, recs = run(later, OutputCache(tmp_path / "a.sqlite"), ["clean", "babble-snr0"])
    assert not hasattr(later, "calls") and stats.cached == 8 and recs[("babble-snr0", items[0].id)].status == "ok"
    alone = Deaf()  # without the clean condition the first audio condition leads
    run(alone, OutputCache(tmp_path / "c.sqlite"), ["white-snr5", "speed1.1"])
    assert alone.calls == len(items)
