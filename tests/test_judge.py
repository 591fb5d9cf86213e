"""The judge (`run --judge SYSTEM`): fixed versioned prompts, strict parsing, both orders for
pairwise verdicts, replies cached under the judge's fingerprint, a killed run resumes, `score`
rebuilds the judge's rows from the cache alone."""
import json
import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.judge import PROMPT_VERSION, parse_pair, parse_score
from bench.types import Generation, System


class FakeJudge(System):
    """Scores 5 an answer found among the references, else 2; in a pair, prefers answer A unless B is
    the references' (a position bias that both orders must cancel). Logs every prompt (JUDGE_LOG);
    fails a batch while JUDGE_FAIL is set (a killed run)."""

    def __init__(self, version="1"):
        self.version = version

    def fingerprint(self):
        return f"fake-judge-{self.version}"

    def generate_batch(self, requests):
        if os.environ.get("JUDGE_FAIL"):
            raise RuntimeError("judge down")
        out = []
        for r in requests:
            p = r.turn.text
            refs = p.split("REFERENCE ANSWER(S):\n")[1].split("\nANSWER")[0]
            if "ANSWER TO GRADE" in p:
                answer = p.split("ANSWER TO GRADE:\n")[1].split("\n\nHow good")[0]
                out.append(Generation("5" if f"- {answer}" in refs else "2"))
            else:
                b = p.split("ANSWER B:\n")[1].split("\n\nWhich")[0]
                out.append(Generation("B" if f"- {b}" in refs else "A"))
        if os.environ.get("JUDGE_LOG"):
            with open(os.environ["JUDGE_LOG"], "a") as f:
                f.writelines(json.dumps(r.turn.text) + "\n" for r in requests)
        return out


def build_judge(ctx):
    return FakeJudge(ctx.args.get("version", "1"))


build_judge.arg_specs = {"version": "another judge (another fingerprint)"}


@pytest.fixture
def judged(fakes_registered, monkeypatch, tmp_path):
    import systems

    systems.REGISTRY.register("judge", "tests.test_judge:build_judge")
    monkeypatch.setenv("JUDGE_LOG", str(tmp_path / "judge.log"))
    with systems.REGISTRY.temporary(text="tests.fakes:build_echo"):  # the topline echoes the transcript
        yield tmp_path / "judge.log"


def _run(tmp_path, capsys, *extra):
    rc = main(["run", "--systems", "fake,text", "--tasks", "summarize", "--limit", "3", "--judge", "judge",
               "--output-dir", str(tmp_path / "runs"), "--no-progress", *extra])
    assert rc == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    return run_dir, json.loads((run_dir / "config.json").read_text())


def _rows(run_dir):
    return {(r["system"], r["metric"], r.get("baseline")): r for r in
            map(json.loads, (run_dir / "rows.jsonl").read_text().splitlines()) if r["metric"].startswith("judge")}


def test_judge_scores_caches_and_resumes(tmp_path, capsys, judged, monkeypatch):
    monkeypatch.setenv("JUDGE_FAIL", "1")  # the first run's judge dies: its prompts are stored as failed
    run_dir, meta = _run(tmp_path, capsys)
    assert meta["judge"]["failed"] == 12 and meta["judge"]["generated"] == 0  # 3 items × (2 scores + 1 pair asked in 2 orders)
    assert not _rows(run_dir).get(("fake", "judge_score", None), {}).get("n")
    monkeypatch.delenv("JUDGE_FAIL")
    run_dir, meta = _run(tmp_path, capsys, "--resume", str(run_dir))  # resumes: asks what failed
    assert meta["judge"]["fingerprint"] == "fake-judge-1" and meta["judge"]["generated"] == 12
    rows = _rows(run_dir)
    # the topline echoes the passage, which is the topline's own reference only for others: the fake
    # system's reversed text is never a reference (2); the topline's passage is not a summary (2)
    assert rows[("fake", "judge_score", None)]["value"] == 2.0 and rows[("fake", "judge_score", None)]["n"] == 3
    assert rows[("text", "judge_score", None)]["value"] == 2.0
    # pairwise, both orders: the judge prefers "A" unless B is the topline's answer; fake vs text: order 1
    # (A=fake, B=text) → B, order 2 (A=text, B=fake) → A: both prefer the baseline → fake loses every item
    assert rows[("fake", "judge_win_vs_text", None)]["value"] == 0.0
    assert ("text", "judge_win_vs_text", None) not in rows  # never against itself
    assert rows[("fake", "judge_unparsed", None)]["value"] == 0.0
    prompts = [json.loads(l) for l in judged.read_text().splitlines()]
    pairs = [p for p in prompts if "ANSWER A:" in p]
    assert len(pairs) == 6 and len(prompts) == 12
    a_then_b = {p.split("ANSWER A:\n")[1].split("\nANSWER B:")[0] for p in pairs}
    b_then_a = {p.split("ANSWER B:\n")[1].split("\n\nWhich")[0] for p in pairs}
    assert a_then_b == b_then_a  # every pair was asked both ways round
    # a rerun is served from the cache; `score` rebuilds the same rows without any model
    judged.write_text("")
    again, meta = _run(tmp_path, capsys)
    assert meta["judge"]["generated"] == 0 and meta["judge"]["cached"] == 12 and judged.read_text() == ""
    assert main(["score", str(again)]) == 0
    capsys.readouterr()
    assert {k: v["value"] for k, v in _rows(again).items()} == {k: v["value"] for k, v in rows.items()}
    # another judge is another identity in the cache key: asked afresh
    _, meta = _run(tmp_path, capsys, "--system-args", "judge:version=2")
    assert meta["judge"]["fingerprint"] == "fake-judge-2" and meta["judge"]["generated"] == 12


def test_no_judge_no_judge_rows_and_no_identity_change(tmp_path, capsys, judged):
    from bench.config import Plan

    assert Plan().identity() == Plan(data_dir="/x").identity()  # where data lives is not identity
    assert Plan().identity() != Plan(judge="text").identity()
    assert main(["run", "--systems", "fake", "--tasks", "summarize", "--limit", "2", "--output-dir",
                 str(tmp_path / "runs"), "--no-progress"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert not _rows(run_dir) and not judged.exists()


def test_unknown_judge_fails_before_anything_runs(tmp_path, capsys, judged):
    assert main(["run", "--systems", "fake", "--tasks", "summarize", "--judge", "jugde",
                 "--output-dir", str(tmp_path)]) == 2
    assert "jugde" in capsys.readouterr().err


@pytest.mark.parametrize("reply, score", [("4", 4), ("4.", 4), ("Score: 5", 5), ("3/5", 3), (" 2\nbecause", 2),
                                          ("6", None), ("four", None), ("4 or 5", None), ("", None)])
def test_parse_score_is_strict(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply, verdict", [("A", "A"), ("b.", "B"), ("Answer B", "B"), ("Tie", "tie"),
                                            ("A or B", None), ("Both", None), ("", None)])
def test_parse_pair_is_strict(reply, verdict):
    assert parse_pair(reply) == verdict


def test_prompt_version_is_in_the_judge_task_version():
    from bench.judge import JudgeTask
    from bench.plugins import build_task

    assert PROMPT_VERSION in JudgeTask(build_task("summarize")).version
