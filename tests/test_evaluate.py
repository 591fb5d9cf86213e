"""The evaluator as a library (`bench.evaluate`), per-system arguments, and a system that lives in this
test file alone (with its own checkpoint option) going through run, score, report and compare."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from bench.cli import main
from bench.plugins import takes
from bench.types import Generation, Request, System

ROOT = Path(__file__).resolve().parents[1]


class Suffixer(System):
    """Answers with the gold text plus the suffix its checkpoint file holds."""

    def __init__(self, checkpoint: Path):
        self.suffix = checkpoint.read_text().strip()
        self.digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]

    def fingerprint(self) -> str:
        return f"suffixer-{self.digest}"

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        return [Generation(text=r.turn.gold_text + self.suffix) for r in requests]


@takes(checkpoint="a text file whose content the system appends to every answer")
def build_suffixer(ctx) -> Suffixer:
    if "checkpoint" not in ctx.args:
        raise FileNotFoundError("suffixer needs --system-args suffixer:checkpoint=FILE")
    return Suffixer(Path(ctx.args["checkpoint"]))


@pytest.fixture
def suffixer(fakes_registered):
    import systems

    systems.REGISTRY.register("suffixer", "tests.test_evaluate:build_suffixer")


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_system_from_a_test_file_runs_scores_reports_and_compares(tmp_path, capsys, suffixer):
    ck = tmp_path / "ck.txt"
    ck.write_text("")
    run = ["run", "--systems", "suffixer,echo", "--tasks", "fake-qa", "--output-dir", str(tmp_path / "runs"),
           "--no-progress", "--system-args", f"suffixer:checkpoint={ck}"]
    assert main(run) == 0
    base = Path(_last_line(capsys))
    rows = {(r["system"], r["metric"]): r["value"] for r in map(json.loads, (base / "rows.jsonl").read_text().splitlines())
            if not r["baseline"]}
    assert rows[("suffixer", "agree_echo")] == 1.0  # an empty suffix: the echo's answers exactly
    assert main(["score", str(base)]) == 0 and Path(_last_line(capsys)) == base
    assert main(["report", str(base)]) == 0 and "| suffixer |" in capsys.readouterr().out
    assert main(["compare", str(base), str(base)]) == 0
    capsys.readouterr()
    ck.write_text("!")  # another checkpoint: new outputs (never the cached ones), and agreement drops
    assert main(run) == 0
    new = Path(_last_line(capsys))
    meta = json.loads((new / "config.json").read_text())
    assert meta["config"]["system_args"] == {"suffixer": {"checkpoint": str(ck)}}
    assert meta["counts"]["generated"] == 12
    assert main(["compare", str(base), str(new)]) == 1
    assert "| REGRESSED | suffixer | fake-qa | clean | agree_echo |" in capsys.readouterr().out


def test_one_system_runs_twice_under_an_alias_each_with_its_own_checkpoint_and_pairs(tmp_path, capsys, suffixer):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("!")
    b.write_text("")
    assert main(["run", "--systems", "suffixer,prev=suffixer,echo", "--tasks", "fake-qa", "--baselines", "prev",
                 "--output-dir", str(tmp_path / "runs"), "--no-progress",
                 "--system-args", f"suffixer:checkpoint={a}", "--system-args", f"prev:checkpoint={b}"]) == 0
    run = Path(_last_line(capsys))
    rows = [json.loads(l) for l in (run / "rows.jsonl").read_text().splitlines()]
    own = {(r["system"], r["metric"]): r["value"] for r in rows if not r["baseline"]}
    assert own[("prev", "agree_echo")] == 1.0 and own[("suffixer", "agree_echo")] == 0.0  # each its own checkpoint
    paired = {r["metric"]: r["value"] for r in rows if r["system"] == "suffixer" and r["baseline"] == "prev"}
    assert paired["agree_echo"] == -1.0
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["systems"] == ["suffixer", "prev", "echo"] and meta["config"]["aliases"] == {"prev": "suffixer"}
    assert meta["fingerprints"]["prev"] != meta["fingerprints"]["suffixer"]
    assert main(["score", str(run)]) == 0 and Path(_last_line(capsys)) == run  # a saved run reads its aliases back
    # an alias may not take a system's own name, and its arguments are checked against the system it runs
    assert main(["run", "--systems", "echo=suffixer", "--tasks", "fake-qa", "--output-dir", str(tmp_path)]) == 2
    assert "'echo' is already a system's name" in capsys.readouterr().err
    assert main(["run", "--systems", "prev=suffixer", "--tasks", "fake-qa", "--output-dir", str(tmp_path),
                 "--system-args", "prev:checkpiont=x"]) == 2
    assert "it takes: checkpoint" in capsys.readouterr().err


def test_an_unknown_system_argument_names_the_allowed_ones(tmp_path, capsys, suffixer):
    rc = main(["run", "--systems", "suffixer", "--tasks", "fake-qa", "--output-dir", str(tmp_path),
               "--system-args", "suffixer:checkpiont=x"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'checkpiont'" in err and "it takes: checkpoint" in err
    assert main(["run", "--systems", "suffixer", "--tasks", "fake-qa", "--system-args", "suffixer"]) == 2
    assert "SYSTEM:key=value" in capsys.readouterr().err


def test_evaluate_is_the_library_entry_point(tmp_path, fakes_registered):
    from bench.evaluate import Plan, evaluate, score_run

    plan = Plan(systems=["fake", "echo"], tasks=["fake-qa"], output_dir=str(tmp_path), baselines=["echo"])
    result = evaluate(plan, progress=False, log=lambda _: None)
    assert result.run_dir.parent == tmp_path and result.n_failed == 1
    outputs = result.outputs("fake", "fake-qa")
    assert len(outputs) == 12 and sum(g is None for g in outputs.values()) == 1
    diffs = [r for r in result.rows if r["baseline"] == "echo"]
    assert diffs and all(r["system"] == "fake" for r in diffs)  # baselines are the plan's, not constants
    again = score_run(result.run_dir, write=False)
    assert [r["value"] for r in again.rows] == [r["value"] for r in result.rows]
    # the saved config is what was asked, whatever the run did
    assert json.loads((result.run_dir / "config.json").read_text())["config"]["systems"] == ["fake", "echo"]


def test_a_skipped_optional_system_leaves_the_saved_config_alone(tmp_path, suffixer):
    from bench.evaluate import Plan, evaluate

    plan = Plan(systems=["echo", "suffixer"], optional_systems=["suffixer"], tasks=["fake-qa"],
                output_dir=str(tmp_path))
    result = evaluate(plan, progress=False, log=lambda _: None)
    meta = json.loads((result.run_dir / "config.json").read_text())
    assert meta["config"]["systems"] == ["echo", "suffixer"] and "suffixer" in meta["skipped"]
    assert plan.systems == ["echo", "suffixer"] and set(meta["fingerprints"]) == {"echo"}
    assert {r["system"] for r in result.rows} == {"echo"}


def test_old_run_configs_read_their_system_options_through_the_aliases(tmp_path):
    from bench.evaluate import load_plan

    (tmp_path / "config.json").write_text(json.dumps({"config": {
        "systems": ["cascade"], "tasks": ["asr"], "asr": "some/asr", "asr_decoder": "beam", "e2e": None,
        "transcript_warning": False}}))
    plan, _ = load_plan(tmp_path)
    assert plan.system_args["cascade"] == {"asr": "some/asr", "decoder": "beam", "transcript_warning": "false"}
    assert plan.system_args["cascade-whisper"] == {"transcript_warning": "false"}
    assert "audiochatllama" not in plan.system_args


def test_the_harness_imports_no_plug_in_and_plug_ins_not_each_other():
    code = ("import sys, bench.evaluate, bench.cli, bench.report, bench.compare; "
            "print([m for m in sys.modules if m.split('.')[0] in ('systems', 'tasks')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for pkg, other in (("systems", "tasks"), ("tasks", "systems")):
        for f in (ROOT / pkg).rglob("*.py"):
            lines = [l.strip() for l in f.read_text().splitlines()]
            assert not [l for l in lines if l.startswith((f"from {other}", f"import {other}"))], f


def test_parse_system_args_merges_and_aliases_yield_to_explicit_keys():
    import argparse

    from bench.config import parse_system_args
    from bench.options import add_model_options, system_args_of

    assert parse_system_args(["cascade:asr=A,decoder=beam", "text:", "cascade:asr=B"]) == \
        {"cascade": {"asr": "B", "decoder": "beam"}, "text": {}}
    # a family member's name holds a colon, a value may hold more
    assert parse_system_args(["hf-audio:org/model:dtype=bfloat16", "openai:base_url=http://127.0.0.1:8000/v1"]) == \
        {"hf-audio:org/model": {"dtype": "bfloat16"}, "openai": {"base_url": "http://127.0.0.1:8000/v1"}}
    ap = argparse.ArgumentParser()
    add_model_options(ap)
    args = ap.parse_args(["--asr", "old", "--system-args", "cascade:asr=new", "--no-transcript-warning"])
    got = system_args_of(args)
    assert got["cascade"] == {"asr": "new", "transcript_warning": "false"}


def test_cuda_defaults_to_bf16_and_its_own_batch_unless_chosen():
    from bench.config import resolve

    assert (resolve({}, {"device": "cpu"}).dtype, resolve({}, {"device": "cpu"}).batch_size) == ("float32", 256)
    gpu = resolve({}, {"device": "cuda:0"})
    assert (gpu.dtype, gpu.batch_size) == ("bfloat16", 64)
    chosen = resolve({"batch_size": 16}, {"device": "cuda", "dtype": "float32"})
    assert (chosen.dtype, chosen.batch_size) == ("float32", 16)


def test_a_task_takes_its_own_limit_and_a_command_line_limit_sets_every_one(tmp_path, fakes_registered):
    from bench.config import resolve
    from bench.evaluate import Plan, evaluate

    plan = Plan(systems=["echo"], tasks=["fake-qa", "typed-qa"], limit=5, limits={"fake-qa": 3},
                output_dir=str(tmp_path))
    result = evaluate(plan, progress=False, log=lambda _: None)
    assert len(result.outputs("echo", "fake-qa")) == 3 and len(result.outputs("echo", "typed-qa")) == 5
    suite = {"limit": 24, "limits": {"spoken-qa": 100}}
    assert resolve(suite, {}).limit_for("spoken-qa") == 100 and resolve(suite, {}).limit_for("asr") == 24
    assert resolve(suite, {"limit": 5}).limit_for("spoken-qa") == 5
    assert Plan(limits={}).identity() == Plan().identity() != Plan(limits={"asr": 3}).identity()
    with pytest.raises(ValueError, match="limits names tasks the plan does not run: asr"):
        evaluate(Plan(systems=["echo"], tasks=["fake-qa"], limits={"asr": 3}, output_dir=str(tmp_path)),
                 progress=False, log=lambda _: None)
