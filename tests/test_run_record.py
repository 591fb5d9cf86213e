"""The run record (config.json, bench/record.py): a run killed mid-generation reads "failed" with its
error, `--resume` finishes it, and records written before the record had a version still read."""
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.record import FAILED, FINISHED, VERSION, RunLog, RunRecord, read_record
from tests.fakes import FakeSystem

STOP = {"after": None}  # batches a Stopper answers before it raises (None: never)


class Stopper(FakeSystem):
    """The fake system, killed at its (`after` + 1)-th batch: Ctrl-C (KeyboardInterrupt) there."""

    def fingerprint(self) -> str:
        return "stopper-1"

    def generate_batch(self, requests):
        if STOP["after"] is not None:
            if STOP["after"] == 0:
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
    STOP["after"] = None


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
