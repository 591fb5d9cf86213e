"""Loaders: the JSONL manifest (round trip, path safety, malformed lines, lazy audio) and the
readers of the public sets under ../shared/data (skipped where that folder is absent)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.tts import Voice
from bench.types import SAMPLE_RATE, Audio, AudioError, AudioRef
from tasks import hf as H
from tasks import loaders as L
from tasks import text_sets as T
from tasks.loaders import ManifestError, read_manifest


def _tone(path: Path, sr: int = 16000, seconds: float = 0.5, channels: int = 1) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, sr, subtype="PCM_16")
    return path


def _manifest(path: Path, *lines) -> Path:
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


def _is_16k_mono(audio: Audio) -> None:
    assert isinstance(audio, Audio) and audio.sample_rate == SAMPLE_RATE
    assert audio.samples.ndim == 1 and audio.samples.dtype == np.float32


# ---------------------------------------------------------------- manifest
def test_manifest_round_trip(tmp_path):
    (tmp_path / "clips").mkdir()
    _tone(tmp_path / "clips" / "a.wav", sr=44100, channels=2)
    _tone(tmp_path / "clips" / "b.flac")
    m = _manifest(
        tmp_path / "m.jsonl",
        {"id": "a", "audio": "clips/a.wav", "transcript": "who wrote hamlet", "references": ["Shakespeare"],
         "meta": {"topic": "lit"}},
        "",  # blank lines are skipped
        {"id": "b", "audio": "clips/b.flac"},
        {"id": "c", "tts": "Who wrote Hamlet?", "voice": "en-us+f3", "rate": 160, "pitch": 40,
         "instruction": "Answer briefly.", "references": ["Shakespeare", "William Shakespeare"]},
        {"id": "d", "tts": "Who wrote Hamlet?", "transcript": "who wrote hamlet"},
        {"id": "e", "text": "And when?", "references": ["1600"], "instruction": None,
         "history": [{"role": "user", "tts": "Who wrote Hamlet?"}, {"role": "assistant", "text": "Shakespeare."},
                     {"role": "user", "audio": "clips/b.flac", "transcript": "hmm"}]},
    )
    items = read_manifest(m)
    assert [it.id for it in items] == ["a", "b", "c", "d", "e"]
    a, b, c, d, e = items
    # nothing is loaded while listing
    assert all(isinstance(t.audio, AudioRef) for t in (a.turn, b.turn, c.turn, d.turn, e.history[0], e.history[2]))
    assert a.turn.transcript == "who wrote hamlet" and a.references == ("Shakespeare",) and a.meta == {"topic": "lit"}
    assert b.turn.transcript is None and b.references == () and b.instruction is None
    assert a.turn.audio.origin == str((tmp_path / "clips" / "a.wav").resolve())
    assert c.turn.transcript == "Who wrote Hamlet?" and c.instruction == "Answer briefly."
    assert "en-us+f3:r160:p40" in c.turn.audio.origin
    assert d.turn.transcript == "who wrote hamlet"  # an explicit transcript wins over the spoken text
    drawn = Voice.sample("test", "d")
    assert f"{drawn.name}:r{drawn.rate}:p{drawn.pitch}" in d.turn.audio.origin
    assert e.turn.text == "And when?" and not e.turn.spoken and e.references == ("1600",)
    assert [t.role for t in e.history] == ["user", "assistant", "user"]
    assert e.history[0].transcript == "Who wrote Hamlet?" and e.history[1].text == "Shakespeare."
    assert e.history[2].transcript == "hmm"
    loaded = a.materialized()
    _is_16k_mono(loaded.turn.audio)
    assert loaded.turn.audio.seconds == pytest.approx(0.5, abs=0.01)  # 44.1 kHz stereo → 16 kHz mono
    _is_16k_mono(e.materialized().history[2].audio)


def test_manifest_tts_synthesizes_on_load(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "cache"))
    item, = read_manifest(_manifest(tmp_path / "m.jsonl", {"id": "t", "tts": "Hello there."}))
    _is_16k_mono(item.materialized().turn.audio)


def test_manifest_voice_is_stable_and_split_dependent(tmp_path):
    m = _manifest(tmp_path / "m.jsonl", {"id": "x", "tts": "hi"})
    assert read_manifest(m)[0].turn.audio.origin == read_manifest(m)[0].turn.audio.origin
    dev = Voice.sample("dev", "x")
    assert f"{dev.name}:r{dev.rate}" in read_manifest(m, split_voice="dev")[0].turn.audio.origin


def test_manifest_root_argument(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "lists").mkdir()
    _tone(tmp_path / "data" / "a.wav")
    m = _manifest(tmp_path / "lists" / "m.jsonl", {"id": "a", "audio": "a.wav"},
                  {"id": "b", "audio": str(tmp_path / "data" / "a.wav")})  # absolute inside the root is fine
    items = read_manifest(m, root=tmp_path / "data")
    _is_16k_mono(items[0].materialized().turn.audio)
    assert items[0].turn.audio.origin == items[1].turn.audio.origin


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "history"])
def test_manifest_path_outside_root_is_rejected(tmp_path, case):
    root, outside = tmp_path / "root", tmp_path / "outside.wav"
    root.mkdir()
    _tone(outside)
    _tone(root / "ok.wav")
    (root / "link.wav").symlink_to(outside)
    bad = {"dotdot": {"id": "x", "audio": "../outside.wav"},
           "absolute": {"id": "x", "audio": str(outside)},
           "symlink": {"id": "x", "audio": "link.wav"},
           "history": {"id": "x", "text": "hi", "history": [{"role": "user", "audio": "sub/../../outside.wav"}]}}[case]
    m = _manifest(root / "m.jsonl", {"id": "ok", "audio": "ok.wav"}, bad)
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: .*outside the data root"):
        read_manifest(m)
    items = read_manifest(m, allow_outside_root=True)
    turn = items[1].materialized().history[0] if case == "history" else items[1].materialized().turn
    _is_16k_mono(turn.audio)


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "text": "hi"', "not valid JSON"),
    ('["x"]', "must be a JSON object"),
    ({"text": "hi"}, '"id" is missing'),
    ({"id": 3, "text": "hi"}, '"id" is missing or not a non-empty string'),
    ({"id": "ok", "text": "again"}, "duplicate id 'ok' \\(first on line 1\\)"),
    ({"id": "x"}, 'exactly one of "audio", "tts" or "text" \\(got none\\)'),
    ({"id": "x", "audio": "a.wav", "tts": "hi"}, "got audio and tts"),
    ({"id": "x", "text": ""}, '"text" must be a non-empty string'),
    ({"id": "x", "text": "hi", "references": "Paris"}, '"references" must be a list of strings'),
    ({"id": "x", "text": "hi", "references": ["a", 1]}, '"references" must be a list of strings'),
    ({"id": "x", "text": "hi", "refrences": ["a"]}, "unknown key\\(s\\) \\['refrences'\\]"),
    ({"id": "x", "text": "hi", "transcript": "hi"}, '"transcript" is for spoken turns'),
    ({"id": "x", "audio": "a.wav", "voice": "en-us"}, "only apply to \"tts\" turns"),
    ({"id": "x", "tts": "hi", "rate": "fast"}, '"rate" must be an integer'),
    ({"id": "x", "tts": "hi", "pitch": 300}, '"pitch" must be an integer from 0 to 100'),
    ({"id": "x", "text": "hi", "instruction": 5}, '"instruction" must be a string or null'),
    ({"id": "x", "text": "hi", "meta": [1]}, '"meta" must be a JSON object'),
    ({"id": "x", "text": "hi", "history": {"role": "user"}}, '"history" must be a list'),
    ({"id": "x", "text": "hi", "history": [{"role": "robot", "text": "beep"}]}, "history\\[0\\] has role 'robot'"),
    ({"id": "x", "text": "hi", "history": [{"text": "no role"}]}, "history\\[0\\] has role None"),
    ({"id": "x", "text": "hi", "history": ["hello"]}, "history\\[0\\] must be a JSON object"),
    ({"id": "x", "text": "hi", "history": [{"role": "assistant", "tts": "hi"}]}, "assistant turns are typed"),
])
def test_manifest_malformed_line_names_line_and_fix(tmp_path, line, message):
    _tone(tmp_path / "a.wav")
    m = _manifest(tmp_path / "m.jsonl", {"id": "ok", "text": "fine"}, line)
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: " + (".*" if message != "not valid JSON" else "") + message):
        read_manifest(m)


def test_manifest_lines_split_only_at_newlines(tmp_path):
    # U+2028 is legal raw inside a JSON string; str.splitlines would cut the line there
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "one\u2028two"}, ensure_ascii=False) + "\r\n"
                                      + json.dumps({"id": "b", "text": "three"}) + "\r\n", encoding="utf-8")
    assert [it.turn.text for it in read_manifest(tmp_path / "m.jsonl")] == ["one\u2028two", "three"]


def test_manifest_missing_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.jsonl")


def test_corrupt_audio_fails_only_its_item_on_load(tmp_path):
    _tone(tmp_path / "good.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    m = _manifest(tmp_path / "m.jsonl", {"id": "good", "audio": "good.wav"}, {"id": "bad", "audio": "bad.wav"},
                  {"id": "gone", "audio": "missing.wav"})
    good, bad, gone = read_manifest(m)  # listing reads no audio
    _is_16k_mono(good.materialized().turn.audio)
    with pytest.raises(AudioError, match=r"bad\.wav: cannot read audio"):
        bad.materialized()
    with pytest.raises(AudioError, match=r"bad\.wav"):
        bad.turn.audio.load()
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        gone.materialized()


def test_from_hf_dataset_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install"):
        H.from_hf_dataset("some/dataset", "test")


class _FakeDataset:
    """The slice of `datasets.Dataset` that from_hf_dataset uses; logs the rows whose audio it decodes."""

    def __init__(self, rows, decoded=None):
        self.rows, self.decoded = rows, ([] if decoded is None else decoded)
        self.column_names = list(rows[0])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if "audio" in self.column_names:
            self.decoded.append(i)
        return self.rows[i]

    def select(self, indices):
        return _FakeDataset([self.rows[i] for i in indices], self.decoded)

    def select_columns(self, cols):
        return _FakeDataset([{c: r[c] for c in cols} for r in self.rows], self.decoded)


def test_from_hf_dataset_is_lazy(monkeypatch):
    sr = 8000
    tone = (0.3 * np.sin(np.arange(sr) / sr * 2 * np.pi * 200)).astype(np.float32)
    ds = _FakeDataset([{"audio": {"array": tone, "sampling_rate": sr}, "text": f"utt {i}", "key": f"k{i}"}
                       for i in range(3)])
    fake = type(sys)("datasets")
    fake.load_dataset = lambda name, config, split: ds
    monkeypatch.setitem(sys.modules, "datasets", fake)
    items = H.from_hf_dataset("org/set", "test", id_column="key", limit=2)
    assert [it.id for it in items] == ["org/set-test-k0", "org/set-test-k1"]
    assert items[1].turn.transcript == "utt 1" and items[1].references == ("utt 1",)
    assert isinstance(items[0].turn.audio, AudioRef) and ds.decoded == []  # listing decoded no audio
    audio = items[0].materialized().turn.audio
    assert ds.decoded == [0]
    _is_16k_mono(audio)
    assert audio.seconds == pytest.approx(1.0, abs=0.01)
    with pytest.raises(L.DataError, match="no column"):
        H.from_hf_dataset("org/set", "test", text_column="sentence")


# ---------------------------------------------------------------- the readers as tasks (`NAME:ARG`)
def _fake_datasets(monkeypatch, ds, calls=None):
    fake = type(sys)("datasets")

    def load_dataset(name, config, split):
        if calls is not None:
            calls.append((name, config, split))
        return ds
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)


def _squad_json(path: Path, question: str = "Who wrote Hamlet?", qid: str = "q1") -> Path:
    path.write_text(json.dumps({"data": [{"title": "Plays", "paragraphs": [{
        "context": "Hamlet is a tragedy written by William Shakespeare.",
        "qas": [{"id": qid, "question": question,
                 "answers": [{"text": "William Shakespeare"}, {"text": "Shakespeare"}, {"text": "Shakespeare"}]}]}]}]}))
    return path


def test_squad_task_from_a_file(tmp_path):
    from bench.plugins import build_task

    path = _squad_json(tmp_path / "dev-v1.1.json")
    task = build_task(f"squad:{path}")
    assert task.name == f"squad:{path}" and {m.name for m in task.metrics} >= {"accuracy", "exact_match", "f1"}
    item, = task.items()
    assert item.id == "squad-q1" and item.turn.transcript == "Who wrote Hamlet?"
    assert item.references == ("William Shakespeare", "Shakespeare") and "tragedy" in item.instruction
    assert build_task(f"squad:{path}").version == task.version  # stable for the same file
    _squad_json(path, question="Who wrote Macbeth?")
    assert build_task(f"squad:{path}").version != task.version  # an edited file never reuses old outputs
    assert build_task(f"squad:{path}", split="dev").version != build_task(f"squad:{path}").version  # other voices


def test_heysquad_file_through_the_squad_task(tmp_path):
    from bench.plugins import build_task

    _squad_json(tmp_path / "dev-original.json")
    _squad_json(tmp_path / "dev-human-transcribed.json", question="who rote hamlet")
    item, = build_task(f"squad:{tmp_path / 'dev-human-transcribed.json'}").items()
    assert item.id == "squad-human-transcribed-q1" and item.turn.transcript == "Who wrote Hamlet?"
    assert item.meta["asr_question"] == "who rote hamlet"


def test_nq_open_task_from_a_file(tmp_path):
    from bench.plugins import build_task

    path = tmp_path / "NQ-open.dev.jsonl"
    path.write_text('{"question": "who wrote hamlet", "answer": ["Shakespeare", "William Shakespeare"]}\n'
                    '{"question": "when was hamlet written", "answer": ["1600"]}\n')
    task = build_task(f"nq-open:{path}")
    assert task.name == f"nq-open:{path}" and len(task.items()) == 2 and len(task.items(1)) == 1
    assert task.items()[0].references == ("Shakespeare", "William Shakespeare")
    assert task.items()[1].id == "nq-open-0002" and task.items()[1].turn.spoken


def test_scitldr_task_from_a_file(tmp_path):
    from bench.plugins import build_task

    path = tmp_path / "SciTLDR-A_test.jsonl"
    path.write_text(json.dumps({"paper_id": "p1", "source": ["We   study speech.", "It works."],
                                "target": ["Speech works. "]}) + "\n")
    task = build_task(f"scitldr:{path}")
    item, = task.items()
    assert task.name == f"scitldr:{path}" and [m.name for m in task.metrics] == ["rouge_1", "rouge_2", "rouge_l"]
    assert item.id == "scitldr-p1" and item.turn.transcript == "We study speech. It works."
    assert item.references == ("Speech works.",)


def test_text_set_tasks_need_their_file(tmp_path):
    from bench.plugins import build_task

    with pytest.raises(TypeError):  # what `list` takes for "needs an argument"
        build_task("squad")
    with pytest.raises(L.DataError, match="missing"):
        build_task(f"nq-open:{tmp_path / 'absent.jsonl'}")


def test_hf_task_from_a_dataset(monkeypatch):
    """`hf:DATASET_ID[:key=value...]` through a stand-in for `datasets` (no hub access in tests)."""
    from bench.plugins import build_task

    tone = np.zeros(1600, dtype=np.float32)
    rows = [{"audio": {"array": tone, "sampling_rate": 16000}, "transcription": f"utt {i}", "key": f"k{i}"}
            for i in range(3)]
    calls = []
    _fake_datasets(monkeypatch, _FakeDataset(rows), calls)
    task = build_task("hf:org/set:config=en_us:text_column=transcription:id_column=key")
    assert calls == [("org/set", "en_us", "test")]
    assert task.name == "hf:org/set:config=en_us:text_column=transcription:id_column=key"
    assert [m.name for m in task.metrics] == ["wer", "cer", "rtfx"] and task.transcript_only
    assert [it.id for it in task.items(2)] == ["org/set-test-k0", "org/set-test-k1"]
    assert task.items()[2].references == ("utt 2",)
    build_task("hf:org/set:text_column=transcription", split="dev")
    assert calls[-1] == ("org/set", None, "validation")  # the hub's name for the dev split
    build_task("hf:org/set:split=dev.clean:text_column=transcription", split="dev")
    assert calls[-1] == ("org/set", None, "dev.clean")
    rows[0]["transcription"] = "changed"
    assert build_task("hf:org/set:config=en_us:text_column=transcription:id_column=key").version != task.version
    with pytest.raises(ValueError, match="keys config, split"):
        build_task("hf:org/set:colum=text")


def test_hf_task_without_datasets_says_how_to_install(monkeypatch):
    from bench.plugins import build_task

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install"):
        build_task("hf:org/set")


# ---------------------------------------------------------------- public sets in ../shared/data
def _check_listing(items, count):
    assert len(items) == count and len({it.id for it in items}) == count
    for it in items:
        assert it.turn.role == "user" and isinstance(it.turn.audio, AudioRef)
        assert it.turn.transcript and it.turn.transcript.strip()


def test_fleurs_asr(shared_data):
    items = L.read_fleurs(shared_data / "speech" / "fleurs", "en")
    _check_listing(items, 10)
    assert items[0].id == "fleurs-en-000" and items[0].references == (items[0].turn.transcript,)
    assert items[0].turn.transcript.startswith("however due to the slow communication channels")
    assert items[0].meta["lang"] == "en" and items[0].meta["duration"] == pytest.approx(10.56)
    audio = items[3].materialized().turn.audio  # Ogg/Opus
    _is_16k_mono(audio)
    assert audio.seconds == pytest.approx(items[3].meta["duration"], abs=0.1)
    assert len(L.read_fleurs(shared_data / "speech" / "fleurs", "de", limit=3)) == 3


def test_fleurs_translation_references_come_from_flores(shared_data):
    items = L.read_fleurs(shared_data / "speech" / "fleurs", "en", target_lang="fr")
    _check_listing(items, 10)
    first = items[0]
    # checked by hand: fleurs-en-000 → FLORES devtest line 495
    assert first.id == "fleurs-en-000-fr" and first.meta["flores_line"] == 495
    assert first.references == ("Cependant, en raison de la lenteur des moyens de communication, les modes "
                                "occidentales pouvaient accuser un retard de 25 à 30 ans.",)
    assert "French" in first.instruction
    fra = (shared_data / "text" / "flores200" / "fra_Latn.devtest").read_text(encoding="utf-8").split("\n")
    assert all(it.references == (fra[it.meta["flores_line"] - 1].strip(),) for it in items)  # one ends in U+00A0
    back = L.read_fleurs(shared_data / "speech" / "fleurs", "fr", target_lang="en",
                         flores_dir=shared_data / "text" / "flores200")
    assert back[0].references[0].startswith("The crash occurred high up in mountainous terrain")


def test_ljspeech(shared_data):
    items = L.read_ljspeech(shared_data / "speech" / "ljspeech")
    _check_listing(items, 31)
    assert "LJ001-0015" not in {it.meta["clip"] for it in items}  # the one dropped upstream
    assert items[1].references == ("in being comparatively modern.",)
    _is_16k_mono(items[1].materialized().turn.audio)  # 22.05 kHz FLAC


def test_librivox(shared_data):
    items = L.read_librivox(shared_data / "speech" / "librivox")
    _check_listing(items, 5)
    assert items[1].id == "librivox-sense_and_sensibility_01_austen_64kb-0880"
    assert items[1].references == ("he was not an ill disposed young man",)
    _is_16k_mono(items[1].materialized().turn.audio)


def test_jfk_stress_clip(shared_data):
    item, = L.read_jfk(shared_data / "speech" / "jfk")
    assert item.references == () and item.turn.transcript is None
    assert "your country" in item.meta["expected_phrases"]
    audio = item.materialized().turn.audio  # 44.1 kHz stereo 24-bit FLAC
    _is_16k_mono(audio)
    assert audio.seconds == pytest.approx(11.0, abs=0.05)


def test_heysquad_forms(shared_data):
    d = shared_data / "text" / "heysquad"
    orig = T.read_squad(d / "dev-common-original-1002.json")
    _check_listing(orig, 1002)
    first = orig[0]
    assert first.id == "squad-5733a5f54776f41900660f48" and first.meta["form"] == "original"
    assert first.turn.transcript == "What year was Casimir Pulaski born in Warsaw?"
    assert first.references == ("1745",)  # three identical answers, deduplicated
    assert first.instruction.startswith("Answer the question using the passage")
    assert "Casimir Pulaski" in first.instruction and first.history == ()
    asr = T.read_squad(d / "dev-common-human-transcribed-1002.json", limit=5)
    assert len(asr) == 5 and asr[0].meta["form"] == "human-transcribed"
    assert asr[0].turn.transcript == first.turn.transcript  # what was said, not the ASR output
    assert asr[0].meta["asr_question"] == "what year was cassimir koloski born in warsaw"
    assert asr[0].turn.audio.origin == first.turn.audio.origin  # same voice in every form
    mt = T.read_squad(d / "dev-common-machine-transcribed-1002.json", limit=1)
    assert mt[0].id == "squad-machine-transcribed-5733a5f54776f41900660f48"


def test_nq_open(shared_data):
    items = T.read_nq_open(shared_data / "text" / "nq_open" / "NQ-open.dev.jsonl")
    _check_listing(items, 3610)
    assert items[0].id == "nq-open-0001"
    assert items[0].turn.transcript == "when was the last time anyone was on the moon"
    assert items[0].references == ("14 December 1972 UTC", "December 1972")
    assert len(T.read_nq_open(shared_data / "text" / "nq_open" / "NQ-open.dev.jsonl", limit=7)) == 7


def test_scitldr(shared_data):
    items = T.read_scitldr(shared_data / "text" / "scitldr" / "SciTLDR-A_test.jsonl")
    _check_listing(items, 618)
    first = items[0]
    assert first.id == "scitldr-SJ1Xmf-Rb" and first.instruction == "Summarize this in one sentence."
    assert first.turn.transcript.startswith("Incremental class learning involves") and "  " not in first.turn.transcript
    assert 2 <= len(first.references) <= 4 and first.references[0].startswith("FearNet is a memory efficient")
