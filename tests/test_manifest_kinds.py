"""Manifests of every kind (qa, asr, translate, summarize, open): parsing and its strictness, the
metric set each kind scores with, `data export` writing the kind, and run → score → report."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.plugins import build_task
from bench.textnorm import describe
from bench.types import Generation, System
from tasks.loaders import ManifestError, parse_manifest


def _tone(path: Path) -> str:
    sf.write(str(path), 0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220), 16000, subtype="PCM_16")
    return path.name


def _manifest(path: Path, *lines) -> Path:
    path.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    return path


class Dropper(System):
    """Transcribes by dropping every third word of the gold transcript (a WER well inside 0-100 %)."""

    def fingerprint(self):
        return "dropper-1"

    def generate_batch(self, requests):
        out = []
        for r in requests:
            words = r.turn.gold_text.split()
            text = " ".join(w for i, w in enumerate(words) if i % 3 != 2)
            out.append(Generation(text=text, transcript=text))
        return out


def build_dropper(ctx):
    return Dropper()


@pytest.fixture
def systems_for_runs(fakes_registered):
    import systems

    systems.REGISTRY.register("dropper", "tests.test_manifest_kinds:build_dropper")
    with systems.REGISTRY.temporary(text="tests.fakes:build_echo"):  # a topline for the agreement metrics
        yield


# ---------------------------------------------------------------- parsing
def test_a_manifest_without_kind_is_qa_as_before(tmp_path):
    m = _manifest(tmp_path / "m.jsonl", {"id": "a", "text": "Who wrote Hamlet?", "references": ["Shakespeare"]})
    task = build_task(f"manifest:{m}")
    assert task.kind == "qa" and not task.transcript_only
    assert [x.name for x in task.metrics][:3] == ["accuracy", "exact_match", "f1"]
    assert task.items()[0].instruction is None  # no kind: exactly as written (its outputs stay cached)
    assert task.version == "1-" + hashlib.sha256(m.read_bytes()).hexdigest()[:12]


@pytest.mark.parametrize("kind, header, metrics", [
    ("qa", {"kind": "qa"}, ["accuracy", "exact_match", "f1", "agree_em", "agree_f1", "agree_chrf"]),
    ("asr", {"kind": "asr"}, ["wer", "cer", "rtfx"]),
    ("translate", {"kind": "translate", "target": "de"}, ["bleu", "chrf", "agree_chrf"]),
    ("summarize", {"kind": "summarize"}, ["rouge_1", "rouge_2", "rouge_l"]),
    ("open", {"kind": "open"}, ["rouge_l", "chrf", "agree_chrf"]),
])
def test_each_kind_scores_with_its_metric_set(tmp_path, kind, header, metrics):
    from tasks import builtin as B

    line = {"id": "a", "audio": _tone(tmp_path / "a.wav"), "transcript": "guten morgen", "references": ["x y"]}
    task = build_task(f"manifest:{_manifest(tmp_path / 'm.jsonl', header, line)}")
    assert task.kind == kind and [x.name for x in task.metrics] == metrics
    assert task.transcript_only == (kind == "asr") and getattr(task, "judged", False) == (kind in ("summarize", "open"))
    same = {"asr": B.ASR.metrics, "translate": B.Translation.metrics, "summarize": B.Summarization.metrics}
    if kind in same:
        assert task.metrics is same[kind]  # one definition per metric set
    item = task.items()[0]
    expected = {"qa": B.QA_INSTRUCTION, "asr": B.ASR_INSTRUCTION, "summarize": B.SUMMARY_INSTRUCTION, "open": None,
                "translate": "Translate what the user says into German. Reply with the translation only."}
    assert item.instruction == expected[kind]
    assert hasattr(task, "signatures") == (kind == "translate")


def test_kind_on_lines_and_explicit_null_instruction(tmp_path):
    m = _manifest(tmp_path / "m.jsonl",
                  {"id": "a", "kind": "asr", "tts": "hello there"},
                  {"id": "b", "kind": "asr", "tts": "good day", "instruction": None, "references": ["good day"]})
    man = parse_manifest(m)
    assert man.kind == "asr" and man.explicit
    a, b = man.items
    assert a.references == ("hello there",)  # asr: the transcript is the reference
    assert b.instruction is None


@pytest.mark.parametrize("lines, message", [
    ([], "has no items"),
    ([{"kind": "qa"}], "has no items"),
    ([{"kind": "quiz"}, {"id": "a", "text": "x"}], "unknown kind 'quiz'"),
    ([{"kind": "translate"}, {"id": "a", "tts": "x", "references": ["y"]}], "needs \"target\""),
    ([{"kind": "translate", "target": "xx"}, {"id": "a", "tts": "x", "references": ["y"]}], "needs \"target\""),
    ([{"kind": "qa", "target": "de"}, {"id": "a", "text": "x"}], "only for kind \"translate\""),
    ([{"kind": "qa", "extra": 1}, {"id": "a", "text": "x"}], "header line has unknown key"),
    ([{"id": "a", "text": "x"}, {"kind": "qa"}], "may only be the first line"),
    ([{"kind": "qa"}, {"id": "a", "text": "x", "kind": "asr"}], "differs from 'qa' on line 1"),
    ([{"kind": "asr"}, {"id": "a", "text": "x"}], "needs a spoken turn"),
    ([{"kind": "asr"}, {"id": "a", "audio": "a.wav"}], "needs the reference transcript"),
    ([{"kind": "asr"}, {"id": "a", "tts": "x", "references": ["x", "y"]}], "exactly one reference"),
    ([{"kind": "summarize"}, {"id": "a", "text": "long text"}], "needs \"references\""),
    ([{"kind": "qa"}, {"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "duplicate id 'a'"),
    ([{"kind": "qa"}, {"id": "a", "audio": "../a.wav"}], "outside the data root"),
    ([{"kind": "qa"}, {"id": "a", "text": "x", "refrences": []}], "unknown key"),
])
def test_manifest_strictness(tmp_path, lines, message):
    (tmp_path / "d").mkdir()
    _tone(tmp_path / "d" / "a.wav")
    _tone(tmp_path / "a.wav")
    with pytest.raises(ManifestError, match=message):
        parse_manifest(_manifest(tmp_path / "d" / "m.jsonl", *lines))


# ---------------------------------------------------------------- through the harness
def _rows(run_dir):
    return {(r["system"], r["task"], r["metric"]): r["value"]
            for r in map(json.loads, (Path(run_dir) / "rows.jsonl").read_text().splitlines()) if not r.get("baseline")}


def _run(tmp_path, capsys, systems, tasks, *extra):
    assert main(["run", "--systems", systems, "--tasks", tasks, "--output-dir", str(tmp_path / "runs"),
                 "--no-progress", *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_every_kind_runs_scores_and_reports(tmp_path, capsys, systems_for_runs):
    clip = _tone(tmp_path / "a.wav")
    spoken = {"audio": clip, "transcript": "good morning to you"}
    paths = {
        "qa": _manifest(tmp_path / "qa.jsonl", {"kind": "qa"}, {"id": "q", **spoken, "references": ["morning"]}),
        "asr": _manifest(tmp_path / "asr.jsonl", {"kind": "asr"}, {"id": "s", **spoken}),
        "translate": _manifest(tmp_path / "tr.jsonl", {"kind": "translate", "target": "de"},
                               {"id": "t", **spoken, "references": ["guten Morgen"]}),
        "summarize": _manifest(tmp_path / "su.jsonl", {"kind": "summarize"},
                               {"id": "u", **spoken, "references": ["a greeting"]}),
        "open": _manifest(tmp_path / "op.jsonl", {"kind": "open"}, {"id": "o", "text": "Tell me a story."}),
    }
    tasks = ",".join(f"manifest:{p}" for p in paths.values())
    run_dir = _run(tmp_path, capsys, "dropper,text", tasks)
    rows = _rows(run_dir)
    assert rows[("dropper", f"manifest:{paths['asr']}", "wer")] == pytest.approx(0.25)  # 1 of 4 words dropped
    assert rows[("text", f"manifest:{paths['qa']}", "accuracy")] == 1.0
    assert ("text", f"manifest:{paths['translate']}", "bleu") in rows
    assert ("text", f"manifest:{paths['summarize']}", "rouge_l") in rows
    assert rows[("dropper", f"manifest:{paths['open']}", "agree_chrf")] < 100
    signatures = json.loads((Path(run_dir) / "config.json").read_text())["metric_signatures"]
    assert "bleu" in signatures[f"manifest:{paths['translate']}"]
    assert signatures[f"manifest:{paths['asr']}"] == {"normalizer": describe()}  # scoring only: named, not keyed
    every = [json.loads(line) for line in (Path(run_dir) / "rows.jsonl").read_text().splitlines()]
    assert {r["normalizer"] for r in every if r["metric"] in ("wer", "cer")} == {describe()}
    assert {r["normalizer"] for r in every if r["metric"] not in ("wer", "cer")} == {None}
    assert main(["score", run_dir]) == 0 and _rows(run_dir) == rows
    capsys.readouterr()
    assert main(["report", run_dir]) == 0


def test_an_exported_20_clip_asr_manifest_scores_like_the_builtin_asr_task(tmp_path, capsys, monkeypatch,
                                                                          systems_for_runs):
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "export", "--tasks", "asr", "--limit", "20", "--out", str(tmp_path / "exp")]) == 0
    manifest = tmp_path / "exp" / "manifest.jsonl"
    assert json.loads(manifest.read_text().splitlines()[0]) == {"kind": "asr"}
    capsys.readouterr()
    assert main(["data", "inspect", "--tasks", f"manifest:{manifest}"]) == 0
    out = capsys.readouterr().out
    assert "| 20 | 20 | 0 |" in out and out.rstrip().endswith("| asr |")
    run_dir = _run(tmp_path, capsys, "dropper", f"asr,manifest:{manifest}", "--limit", "20")
    rows = _rows(run_dir)
    builtin, mine = rows[("dropper", "asr", "wer")], rows[("dropper", f"manifest:{manifest}", "wer")]
    assert 0.1 < builtin < 0.6 and mine == builtin
    assert rows[("dropper", "asr", "cer")] == rows[("dropper", f"manifest:{manifest}", "cer")]


def test_export_of_several_tasks_writes_one_manifest_per_kind(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "export", "--tasks", "translate-en-fr,summarize", "--limit", "1",
                 "--out", str(tmp_path / "exp")]) == 0
    tr = build_task(f"manifest:{tmp_path / 'exp' / 'translate-en-fr' / 'manifest.jsonl'}")
    su = build_task(f"manifest:{tmp_path / 'exp' / 'summarize' / 'manifest.jsonl'}")
    assert (tr.kind, tr.target, su.kind) == ("translate", "fr", "summarize")
    orig = build_task("translate-en-fr").items(1)[0]
    assert tr.items()[0].references == orig.references and tr.items()[0].instruction == orig.instruction
    assert tr.items()[0].materialized().turn.audio.seconds > 0.5
