"""The run record (config.json, bench/record.py): a run stopped mid-generation (Ctrl-C, an exception,
SIGTERM, SIGKILL) reads "failed" with its error, `--resume` finishes it, and records written before the
record had a version still read."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.record import FAILED, FINISHED, GONE, RUNNING, VERSION, RunLog, RunRecord, Terminated, read_record
from tests.fakes import FakeSystem

ROOT = Path(__file__).resolve().parents[1]
STOP = {"after": None, "by": "ctrl-c"}  # batches a Stopper answers before it is stopped (None: never), and how


class Stopper(FakeSystem):
    """The fake system, stopped at its (`after` + 1)-th batch: Ctrl-C (KeyboardInterrupt) there, or a
    SIGTERM to its own process."""

    def fingerprint(self) -> str:
        return "stopper-1"

    def generate_batch(self, requests):
        if STOP["after"] is not None:
            if STOP["after"] == 0 and STOP["by"] == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # (the handler raises before this ends)
            elif STOP["after"] == 0:
                raise KeyboardInterrupt
            STOP["after"] -= 1
        return super().generate_batch(requests)


def build_stopper(ctx) -> Stopper:
    return Stopper()


def build_crasher(ctx):
    raise RuntimeError("CUDA out of memory while loading")  # not a missing checkpoint: the run must stop


@pytest.fixture
def stoppers(fakes_registered):
    import systems

    systems.REGISTRY.register("stopper", "tests.test_run_record:build_stopper")
    systems.REGISTRY.register("crasher", "tests.test_run_record:build_crasher")
    yield
    STOP.update(after=None, by="ctrl-c")


def _run_args(tmp_path, systems):
    return ["run", "--systems", systems, "--tasks", "fake-qa", "--output-dir", str(tmp_path / "runs"),
            "--batch-size", "2", "--no-progress", "--baselines", ""]


def _run_dir(tmp_path) -> Path:
    (d,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return d


def test_ctrl_c_mid_generation_leaves_a_failed_record_and_resume_finishes_it(tmp_path, capsys, stoppers):
    STOP["after"] = 2  # two batches (4 items) stored, then Ctrl-C
    assert main(_run_args(tmp_path, "echo,stopper")) == 130
    run_dir = _run_dir(tmp_path)
    record = read_record(run_dir)
    assert record.status == FAILED and record.error == "KeyboardInterrupt" and record.version == VERSION
    assert record.fingerprints == {"echo": "echo-1", "stopper": "stopper-1"} and not record.counts

    STOP["after"] = None
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]) == run_dir
    record = read_record(run_dir)
    assert record.status == FINISHED and record.error is None
    # echo's 12 and the stopper's 4 from before the kill are cached; FAIL-me fails again
    assert record.counts == {"generated": 7, "cached": 16, "failed": 1}


def test_an_exception_partway_leaves_a_failed_record_with_its_error_and_resume_finishes_it(tmp_path, stoppers):
    import systems
    from bench.evaluate import Plan, evaluate, load_plan

    plan = Plan(systems=["echo", "crasher"], tasks=["fake-qa"], output_dir=str(tmp_path / "runs"), batch_size=4)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        evaluate(plan, progress=False, log=lambda _: None)
    run_dir = _run_dir(tmp_path)
    record = read_record(run_dir)
    assert record.status == FAILED and record.error == "RuntimeError: CUDA out of memory while loading"
    assert record.fingerprints == {"echo": "echo-1"}  # echo generated before the crash

    systems.REGISTRY.register("crasher", "tests.fakes:build_fake")  # the cause fixed
    plan, _ = load_plan(run_dir)
    result = evaluate(plan, run_dir=run_dir, progress=False, log=lambda _: None)
    assert result.record.status == FINISHED and read_record(run_dir).status == FINISHED
    assert result.counts == {"generated": 11, "cached": 12, "failed": 1}
    assert {r["system"] for r in result.rows} == {"echo", "crasher"}


def test_an_old_untyped_record_reads_scores_and_reports(tmp_path, capsys, fakes_registered):
    assert main(_run_args(tmp_path, "fake,echo")) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    new = json.loads((run_dir / "config.json").read_text())
    # the record as runs wrote it before it was typed: no version, no error, an unknown key of its own
    old = {k: v for k, v in new.items() if k not in ("version", "error", "judge", "metric_signatures")}
    (run_dir / "config.json").write_text(json.dumps({**old, "note": "kept"}))
    record = read_record(run_dir)
    assert record.version == 1 and record.status == FINISHED and record.extra == {"note": "kept"}
    assert main(["score", str(run_dir)]) == 0 and main(["report", str(run_dir)]) == 0
    assert json.loads((run_dir / "config.json").read_text())["note"] == "kept"  # written back as it was


def test_the_record_round_trips_and_refuses_unknown_fields(tmp_path):
    record = RunRecord(config={"systems": ["a"]}, fingerprints={"a": "fp"}, extra={"from_the_future": 1})
    assert RunRecord.from_dict(record.to_dict()) == record
    log = RunLog(tmp_path, record)
    with pytest.raises(AttributeError, match="no field 'fingreprints'"):
        log.update(fingreprints={})
    with pytest.raises(ValueError, match="not a run record"):
        RunRecord.from_dict({"status": "finished"})


def test_sigterm_mid_generation_is_handled_as_ctrl_c_and_resume_finishes_it(tmp_path, capsys, stoppers):
    before = signal.getsignal(signal.SIGTERM)
    STOP.update(after=2, by="sigterm")
    assert main(_run_args(tmp_path, "echo,stopper")) == 128 + signal.SIGTERM
    assert "terminated: every finished batch is in the cache" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone with the run
    run_dir = _run_dir(tmp_path)
    record = read_record(run_dir)
    assert record.status == FAILED and record.error == "Terminated: SIGTERM"
    STOP["after"] = None
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    assert read_record(run_dir).status == FINISHED


def test_a_record_left_running_by_a_process_gone_from_this_host_reads_failed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead, here = int(gone.stdout), socket.gethostname()
    log = RunLog(tmp_path, RunRecord(config={"systems": ["a"]}))
    log.update(status=RUNNING, pid=dead, host=here)
    record = read_record(tmp_path)
    assert record.status == FAILED and record.error == f"{GONE} (pid {dead})"
    assert json.loads((tmp_path / "config.json").read_text())["status"] == RUNNING  # reading writes nothing
    log.update(pid=os.getpid())  # alive: still running
    assert read_record(tmp_path).status == RUNNING
    log.update(pid=dead, host="another-machine")  # another host's process: nothing to tell from here
    assert read_record(tmp_path).status == RUNNING


def _started_run(tmp_path, env) -> tuple[subprocess.Popen, Path]:
    """A real `audiochat-bench run` of the slowed fake system, once it has stored two batches."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cli_with_fakes.py"), *_run_args(tmp_path, "fake")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len((tmp_path / "gen.log").read_text().splitlines()
                                         if (tmp_path / "gen.log").exists() else []) < 4:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc, _run_dir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_real_run_killed_mid_generation_reads_failed_and_resume_finishes_it(tmp_path, capsys, sig, fakes_registered):
    """SIGKILL leaves the record saying running, with the dead process's pid: every reader (score, report,
    --resume) reads it failed. SIGTERM is handled as Ctrl-C: the process writes failed itself."""
    env = {**os.environ, "FAKE_DELAY": "0.5", "FAKE_LOG": str(tmp_path / "gen.log"), "PYTHONPATH": str(ROOT)}
    proc, run_dir = _started_run(tmp_path, env)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    raw = json.loads((run_dir / "config.json").read_text())
    assert raw["pid"] == proc.pid and raw["host"] == socket.gethostname()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and raw["status"] == RUNNING
        error = f"{GONE} (pid {proc.pid})"
    else:
        assert proc.returncode == 128 + signal.SIGTERM and "terminated" in err and raw["status"] == FAILED
        error = "Terminated: SIGTERM"
    record = read_record(run_dir)
    assert record.status == FAILED and record.error == error and list(record.fingerprints) == ["fake"]

    capsys.readouterr()
    assert main(["score", str(run_dir)]) == 0  # the outputs stored before the kill, said to be a failed run's
    assert f"note: the run failed ({error})" in capsys.readouterr().err
    assert main(["report", str(run_dir)]) == 0 and "note: the run failed" in capsys.readouterr().err
    assert main(["run", "--resume", str(run_dir), "--no-progress"]) == 0
    record = read_record(run_dir)
    assert record.status == FINISHED and record.error is None and record.pid == os.getpid()
    assert record.counts["cached"] >= 4 and sum(record.counts.values()) == 12
    assert "note:" not in capsys.readouterr().err
