"""Built-in suites: splits disjoint by text and voice, items well formed; data commands; manifest task."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.plugins import build_task, tasks
from bench.tts import voices
from tasks import needs_argument

BUILTIN = [n for n in tasks().names()
           if n != "typed-qa" and not needs_argument(n) and not n.startswith(("asr-", "fleurs-", "heysquad-"))]  # public data


def _norm(s):
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c == " ").split())


@pytest.mark.parametrize("name", BUILTIN)
def test_items_are_spoken_in_their_split_voices_with_references(name):
    for split in ("test", "dev"):
        items = build_task(name, split=split).items()
        if split == "test":
            assert items, f"{name} has no test items"
        assert len({it.id for it in items}) == len(items)
        for it in items:
            assert it.references and all(it.references)
            assert it.turn.spoken and it.turn.transcript
            name_ = it.turn.audio.origin.split(":")[1]
            assert name_ in voices(split), (name, it.id, name_)


def test_suite_splits_are_disjoint_by_text():
    from corpus import DATA

    for path in sorted((DATA / "suites").glob("*.jsonl")):
        by_split = {}
        for r in map(json.loads, path.read_text().splitlines()):
            text = r.get("text") or r.get("question") or r.get("en") or r.get("passage") \
                or " ".join(t["text"] for t in (*r["turns"], r["final"]))  # a conversation as a whole
            by_split.setdefault(r["split"], set()).add(_norm(text))
        splits = list(by_split)
        for i, a in enumerate(splits):
            for b in splits[i + 1:]:
                assert not by_split[a] & by_split[b], (path.name, a, b, by_split[a] & by_split[b])
    test_qa = {_norm(json.loads(l)["question"]) for l in (DATA / "spoken_qa.jsonl").read_text().splitlines()}
    train_qa = {_norm(json.loads(l)["question"]) for l in (DATA / "suites" / "spoken_qa.jsonl").read_text().splitlines()}
    assert not test_qa & train_qa and len(test_qa) == 150  # 150 distinct test questions


def test_multiturn_mixes_typed_and_spoken_turns():
    items = build_task("multiturn").items()
    kinds = {it.meta["kind"] for it in items}
    assert kinds == {"context", "disambiguation"}
    assert any(t.role == "user" and not t.spoken for it in items for t in it.history)
    assert any(t.role == "user" and t.spoken for it in items for t in it.history)


def test_translation_items_per_language_share_audio_not_ids():
    fr, de = build_task("translate-en-fr").items(3), build_task("translate-en-de").items(3)
    assert [i.turn.transcript for i in fr] == [i.turn.transcript for i in de]
    assert not {i.id for i in fr} & {i.id for i in de}
    assert fr[0].turn.audio.origin == de[0].turn.audio.origin


def test_data_inspect_and_export_roundtrip(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "inspect", "--tasks", "spoken-qa,multiturn", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "| spoken-qa | test | clean | espeak | 3 | 3 | 0 |" in out
    assert main(["data", "export", "--tasks", "multiturn", "--limit", "2", "--out", str(tmp_path / "exp")]) == 0
    task = build_task(f"manifest:{tmp_path / 'exp' / 'manifest.jsonl'}")
    items, orig = task.items(), build_task("multiturn").items(2)
    assert [i.id for i in items] == [i.id for i in orig]
    assert [i.references for i in items] == [i.references for i in orig]
    assert [len(i.history) for i in items] == [len(i.history) for i in orig]
    assert items[0].materialized().turn.audio.seconds > 0.5
    assert main(["data", "synth", "--tasks", "spoken-qa", "--limit", "2"]) == 0
    assert "real time" in capsys.readouterr().out


def test_topline_runs_on_spoken_items_reading_transcripts(tmp_path, capsys, fakes_registered):
    """`run --tasks spoken-qa` on spoken items: the system receives audio and the gold transcript."""
    assert main(["run", "--systems", "fake", "--tasks", "spoken-qa", "--limit", "3",
                 "--output-dir", str(tmp_path), "--no-progress"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    outs = [json.loads(l) for l in open(f"{run_dir}/outputs.jsonl")]
    assert [o["status"] for o in outs] == ["ok"] * 3
    assert outs[0]["text"] == "What is the capital of France?"[::-1]


def test_two_systems_receive_bit_identical_perturbed_audio(tmp_path, capsys, fakes_registered):
    """Through the runner: two systems, separately built, hear the same noisy samples; clean differs."""
    assert main(["run", "--systems", "hear-a,hear-b", "--tasks", "spoken-qa", "--limit", "4",
                 "--conditions", "clean,white-snr5,reverb-rt0.3", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    heard = {}
    for o in map(json.loads, open(f"{run_dir}/outputs.jsonl")):
        heard.setdefault((o["condition"], o["item_id"]), {})[o["system"]] = o["text"]
    assert len(heard) == 12
    assert all(v["hear-a"] == v["hear-b"] for v in heard.values())
    assert heard[("clean", "qa-000")]["hear-a"] != heard[("white-snr5", "qa-000")]["hear-a"]


def test_typed_qa_is_spoken_qa_typed():
    typed, spoken = build_task("typed-qa").items(5), build_task("spoken-qa").items(5)
    assert [t.turn.text for t in typed] == [s.turn.transcript for s in spoken]
    assert not any(t.turn.spoken for t in typed)


def test_response_ppl_scores_the_topline_answer(tmp_path, capsys, fakes_registered):
    """A scoring task: the reference system answers first, then every system scores that answer."""
    import systems

    with systems.REGISTRY.temporary(text="tests.fakes:build_echo"):  # the reference answers by echoing
        assert main(["run", "--systems", "fake", "--tasks", "response-ppl", "--limit", "3",
                     "--output-dir", str(tmp_path), "--no-progress"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    outs = [json.loads(l) for l in open(f"{run_dir}/outputs.jsonl")]
    assert [o["text"] for o in outs] == [it.turn.transcript for it in build_task("spoken-qa").items(3)]
    import math
    assert [o["nll"] for o in outs] == pytest.approx([0.5 * o["tokens"] for o in outs])  # per item, for paired tests
    rows = {r["metric"]: r for r in map(json.loads, open(f"{run_dir}/rows.jsonl"))}
    assert rows["ppl"]["value"] == pytest.approx(math.exp(0.5))  # the fake scores -0.5 nats per character
    assert "ppl_ratio" not in rows  # the reference itself was not scored in this run
    # per-item NLL lets scripts/paired_ppl.py compare two runs item by item
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "scripts" / "paired_ppl.py"), run_dir, run_dir, "--system", "fake"],
                         capture_output=True, text=True, check=True, cwd=root).stdout
    assert "3 items" in out and "B - A +0.000 [+0.000, +0.000]" in out, out


def test_real_data_tasks(shared_data):
    """The public-data tasks read ../shared/data (skipped without it)."""
    fr = build_task("fleurs-translate-en-fr").items()
    assert len(fr) == 10 and all(it.references[0] for it in fr) and fr[0].instruction.startswith("Translate")
    assert len(build_task("asr-ljspeech").items()) == 31 and len(build_task("asr-librivox").items()) == 5


def test_configured_tasks_check_their_arguments():
    from tasks.builtin import FleursTranslation, RealASR, Translation

    assert Translation(target="es").name == "translate-en-es"
    assert FleursTranslation("dev", target="de").name == "fleurs-translate-en-de"
    assert RealASR(dataset="librivox").description == "real speech: LibriVox, one reader"
    with pytest.raises(ValueError, match="fr, de, es"):
        Translation(target="it")
    with pytest.raises(ValueError, match="fleurs, ljspeech, librivox"):
        RealASR(dataset="timit")
    assert build_task("translate-en-de", split="dev").split == "dev"


def test_committed_baseline_task_versions_still_match():
    rows = [json.loads(l) for l in (Path(__file__).resolve().parents[1] / "results" / "baselines" / "smoke"
                                   / "rows.jsonl").read_text().splitlines() if l.strip()]
    versions = {r["task"]: r["task_version"] for r in rows}
    assert versions and all(build_task(t).version == v for t, v in versions.items()), versions


# ---------------------------------------------------------------- suites (tasks/suites/*.toml)
def test_builtin_suites_are_toml_files_naming_known_plugins():
    import systems
    from tasks.suites import SUITE_DIR, SUITES

    assert list(SUITES) == ["smoke", "default", "ablations", "full", "real", "voices"]
    assert {p.stem for p in SUITE_DIR.glob("*.toml")} == set(SUITES)
    assert SUITES["smoke"]["limit"] == 12 and SUITES["full"]["limit"] is None
    # the voice-family suite: every spoken condition a family, each end-to-end system against its own cascade first
    assert SUITES["voices"]["conditions"] == ["clean", "voice-kokoro", "voice-joe"]
    assert SUITES["voices"]["baselines"][:2] == ["cascade-tokens", "cascade-whisper-tokens"]
    assert "voice-joe" in SUITES["default"]["sweep_conditions"]  # the unseen voice without a flag
    # the default asks the paper's question on enough spoken-QA items to decide it; the ablations have their suite
    default, ablations = SUITES["default"], SUITES["ablations"]
    assert default["limits"]["spoken-qa"] == 150 and "white-snr5" in default["sweep_conditions"]
    ablated = {"cascade-tokens", "audiochatllama-continuous", "audiochatllama-lora", "audiochatllama-whisper-continuous"}
    assert not ablated & set(default["systems"]) and ablated <= set(ablations["systems"]) <= set(SUITES["full"]["systems"])
    for name, s in SUITES.items():
        assert s["about"], name
        for task in s.get("limits", {}):
            assert task in s["tasks"], (name, task)
        if name == "ablations":
            continue
        assert s["bucket_systems"] == ["cascade", "cascade-whisper"], name
        if name != "voices":
            assert s["conditions"] == ["clean"] and s["baselines"] == ["cascade", "text"], name
        for n in s["systems"] + s.get("optional_systems", []) + s["baselines"] + s["bucket_systems"]:
            systems.REGISTRY.target(n)
        for n in s["tasks"] + s.get("sweep_tasks", []):
            tasks().target(n)
        assert set(s.get("optional_systems", [])) <= set(s["systems"])


def test_a_users_suite_file(tmp_path):
    from tasks.suites import SUITE_DIR, SUITES, load_suite, suite_from_file

    mine = tmp_path / "mine.toml"
    mine.write_text((SUITE_DIR / "smoke.toml").read_text().replace("limit = 12", "limit = 3"))
    assert suite_from_file(mine) == {**SUITES["smoke"], "limit": 3}
    assert load_suite(str(mine)) == suite_from_file(mine)
    smoke = load_suite("smoke")
    smoke["systems"].append("changed")  # a copy: the built-in suite stays as it is
    assert "changed" not in SUITES["smoke"]["systems"]
    bad = tmp_path / "bad.toml"
    bad.write_text((SUITE_DIR / "smoke.toml").read_text() + "\n[limits]\nspoken-qa = 0\n")
    with pytest.raises(ValueError, match="limits must be a table of task = positive integer"):
        suite_from_file(bad)
    with pytest.raises(KeyError, match="Did you mean 'smoke'"):
        load_suite("smoek")
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_suite(str(tmp_path / "nope.toml"))
    for text, message in [('sytems = ["text"]', "unknown key 'sytems'. Did you mean 'systems'"),
                          ('systems = "text"', "systems must be a list of strings"),
                          ("limit = 0", "limit must be a positive integer"),
                          ("systems = [", "not valid TOML")]:
        (tmp_path / "bad.toml").write_text(text + "\n")
        with pytest.raises(ValueError, match=message):
            suite_from_file(tmp_path / "bad.toml")


def test_missing_public_data_names_the_variable_and_not_the_benchmark_one(monkeypatch, tmp_path):
    """$AUDIOCHAT_BENCH_PUBLIC_DATA (../shared/data: the real suite) and $AUDIOCHAT_BENCH_DATA_DIR (`--data-dir`:
    Hugging Face benchmark copies) are two folders: the error says which is which."""
    from tasks.builtin import public_data_dir

    monkeypatch.delenv("AUDIOCHAT_BENCH_DATA", raising=False)
    monkeypatch.setenv("AUDIOCHAT_BENCH_PUBLIC_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("AUDIOCHAT_BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"set AUDIOCHAT_BENCH_PUBLIC_DATA to .*DATA_DIR=.* is another folder"):
        public_data_dir()
    monkeypatch.delenv("AUDIOCHAT_BENCH_DATA_DIR")
    with pytest.raises(FileNotFoundError) as err:
        public_data_dir()
    assert "DATA_DIR" not in str(err.value)
    (tmp_path / "absent").mkdir()
    assert public_data_dir() == tmp_path / "absent"


def test_the_public_datas_old_variable_still_works_with_a_warning(monkeypatch, tmp_path):
    from tasks.builtin import public_data_dir

    monkeypatch.delenv("AUDIOCHAT_BENCH_PUBLIC_DATA", raising=False)
    monkeypatch.setenv("AUDIOCHAT_BENCH_DATA", str(tmp_path))
    with pytest.warns(FutureWarning, match=r"\$AUDIOCHAT_BENCH_DATA is deprecated.*AUDIOCHAT_BENCH_PUBLIC_DATA"):
        assert public_data_dir() == tmp_path
    monkeypatch.setenv("AUDIOCHAT_BENCH_PUBLIC_DATA", str(tmp_path / "new"))
    (tmp_path / "new").mkdir()
    assert public_data_dir() == tmp_path / "new"  # the new name wins, and nothing is said
