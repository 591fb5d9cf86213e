"""Public benchmarks by name: each reader on a small fixture that the test writes in that dataset's
real on-disk layout (parquet with an `audio` column, or a save_to_disk folder), offline; VoiceBench's
scoring rules (strict option letters, IFEval checks)."""
import io
import json
import sys

import numpy as np
import pytest
import soundfile as sf

from bench.plugins import build_task
from bench.types import AudioRef, Generation

datasets = pytest.importorskip("datasets")  # the `hub` extra (in the `test` extra: CI runs these)


def _wav(seconds=0.3, sr=16000, freq=220.0) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write(path, columns: dict, disk=False):
    """One split in the hub's layout: a parquet file (or a save_to_disk folder) with an Audio column."""
    n = len(next(iter(columns.values())))
    audio = [{"bytes": _wav(freq=200 + 20 * i), "path": f"clip{i}.wav"} for i in range(n)]
    ds = datasets.Dataset.from_dict({"audio": audio, **columns}).cast_column("audio", datasets.Audio(sampling_rate=16000))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_to_disk(str(path)) if disk else ds.to_parquet(str(path))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache: nothing but the fixture
    monkeypatch.setenv("AUDIOCHAT_BENCH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _loaded(item):
    audio = item.materialized().turn.audio
    assert audio.sample_rate == 16000 and audio.seconds == pytest.approx(0.3, abs=0.01)


def test_voicebench_sd_qa(hub):
    # hlt-lab/voicebench: sd-qa/<accent>-00000-of-00001.parquet, columns audio, prompt, reference
    _write(hub / "hlt-lab/voicebench/sd-qa/usa-00000-of-00001.parquet",
           {"prompt": ["who wrote hamlet", "capital of france"], "reference": ["Shakespeare", "Paris"]})
    task = build_task("voicebench:sd-qa")
    items = task.items()
    assert [it.id for it in items] == ["voicebench-sd-qa-usa-0000", "voicebench-sd-qa-usa-0001"]
    assert items[1].turn.transcript == "capital of france" and items[1].references == ("Paris",)
    assert items[0].instruction is None and isinstance(items[0].turn.audio, AudioRef)  # nothing decoded yet
    assert [m.name for m in task.metrics][:3] == ["accuracy", "exact_match", "f1"]
    _loaded(items[0])
    with pytest.raises(Exception, match="not available|usa, aus"):
        build_task("voicebench:sd-qa:gbr").items()  # a split the copy lacks: a clear error, never a hub call
    with pytest.raises(ValueError, match="voicebench:sd-qa, voicebench:openbookqa"):
        build_task("voicebench:sdqa")


def test_voicebench_mcq_unparsable_answer_is_wrong(hub):
    _write(hub / "voicebench/openbookqa/test-00000-of-00001.parquet",  # DIR/<name> works too
           {"prompt": ["q1 A. x B. y C. z D. w"] * 3, "reference": ["B", "C", "A"]})
    task = build_task("voicebench:openbookqa")
    items = task.items()
    acc, unparsed, voicebench = task.metrics
    answers = ["The answer is B.", "I think it is C or maybe D", "Paris"]
    assert [acc.fn(it, Generation(a), {}) for it, a in zip(items, answers)] == [1.0, 0.0, 0.0]
    assert [unparsed.fn(it, Generation(a), {}) for it, a in zip(items, answers)] == [0.0, 1.0, 1.0]
    # VoiceBench's expected accuracy: its random letter is right 1 time in 4 on an unparsed answer
    assert [voicebench.fn(it, Generation(a), {}) for it, a in zip(items, answers)] == [1.0, 0.25, 0.25]


def test_voicebench_mmsu_subject_from_a_save_to_disk_copy(hub):
    _write(hub / "hlt-lab/voicebench/mmsu/law", {"prompt": ["law q"], "reference": ["D"]}, disk=True)
    item, = build_task("voicebench:mmsu:law").items()
    assert item.id == "voicebench-mmsu-law-0000" and item.references == ("D",)
    _loaded(item)


def test_voicebench_ifeval(hub):
    none = {"num_words": None, "relation": None, "keywords": None, "end_phrase": None}
    _write(hub / "hlt-lab/voicebench/ifeval/test-00000-of-00001.parquet", {
        "key": [1001, 1002], "prompt": ["write without commas", "say it in two sentences"],
        "instruction_id_list": [["punctuation:no_comma", "length_constraints:number_words"],
                                ["length_constraints:number_sentences"]],
        "kwargs": [[none, {**none, "num_words": 3, "relation": "at least"}], [none]]})
    task = build_task("voicebench:ifeval")
    a, b = task.items()
    assert a.id == "voicebench-ifeval-test-1001" and a.meta["instruction_id_list"][0] == "punctuation:no_comma"
    assert [m.name for m in task.metrics][0] == task.primary_metric() == "ifeval"  # VoiceBench's mean of four
    stats = task.metrics[0].fn
    assert stats(a, Generation("one two three four"), {}) == (1.0, 2, 1.0, 2, 2, 1.0)
    assert stats(a, Generation("one, two, three"), {}) == (0.0, 1, 0.0, 1, 2, 1.0)
    assert stats(b, Generation("hi"), {}) is None  # a check not implemented here: not scored, never guessed


def test_voicebench_open_sets_are_judged(hub):
    _write(hub / "hlt-lab/voicebench/alpacaeval/test-00000-of-00001.parquet", {"prompt": ["tell me a story"]})
    task = build_task("voicebench:alpacaeval")
    assert task.judged and task.kind == "open" and "agree_chrf" in [m.name for m in task.metrics]


def test_heysquad_human(hub):
    # yijingwu/HeySQuAD_human: data/validation-*.parquet; answers as a list of {answer_start, text}
    _write(hub / "yijingwu/HeySQuAD_human/data/validation-00000-of-00001.parquet", {
        "transcription": ["who rote hamlet", "what is it"], "question": ["Who wrote Hamlet?", "What is it?"],
        "context": ["Hamlet is by Shakespeare.", "Nothing."],
        "answers": [[{"answer_start": 12, "text": "Shakespeare"}, {"answer_start": 12, "text": "Shakespeare"}], []],
        "is_impossible": [False, True], "id": ["q1", "q2"],
        "plausible_answers": [[], [{"answer_start": 0, "text": "x"}]]})
    item, = build_task("heysquad:human").items()  # the unanswerable question is left out
    assert item.turn.transcript == "Who wrote Hamlet?" and item.references == ("Shakespeare",)
    assert item.meta["human_transcript"] == "who rote hamlet" and "Hamlet is by Shakespeare." in item.instruction
    _loaded(item)


def test_librispeech(hub):
    # openslr/librispeech_asr: config clean/other, columns file, audio, text, speaker_id, chapter_id, id
    _write(hub / "openslr/librispeech_asr/other/test-00000-of-00001.parquet", {
        "file": ["a.flac", "b.flac"], "text": ["HELLO WORLD", "GOOD MORNING"], "speaker_id": [1, 2],
        "chapter_id": [3, 4], "id": ["1-3-0001", "2-4-0002"]})
    task = build_task("librispeech:test-other")
    items = task.items()
    assert task.transcript_only and [m.name for m in task.metrics] == ["wer", "cer", "rtfx"]
    assert items[0].id == "librispeech-1-3-0001" and items[0].references == ("HELLO WORLD",)
    _loaded(items[1])
    with pytest.raises(ValueError, match="test-clean"):
        build_task("librispeech:test")


def test_fleurs(hub):
    # google/fleurs: config en_us, columns id, num_samples, path, audio, transcription, raw_transcription, ...
    _write(hub / "google/fleurs/en_us/test/0000.parquet", {
        "id": [7, 7], "num_samples": [4800, 4800], "path": ["a.wav", "b.wav"],
        "transcription": ["hello world", "hello world"], "raw_transcription": ["Hello, world!", "Hello, world!"],
        "gender": [0, 1], "lang_id": [19, 19], "language": ["English", "English"], "lang_group_id": [0, 0]})
    items = build_task("fleurs:en").items()
    assert [it.id for it in items] == ["fleurs-en_us-test-00000", "fleurs-en_us-test-00001"]  # ids repeat upstream
    assert items[0].references == ("hello world",) and items[0].turn.transcript == "Hello, world!"
    _loaded(items[0])


def test_covost2(hub):
    # fixie-ai/covost2 (facebook/covost2's columns): client_id, file, audio, sentence, translation, id
    _write(hub / "fixie-ai/covost2/en_de/test-00000-of-00001.parquet", {
        "client_id": ["c"], "file": ["x.mp3"], "sentence": ["Good morning."], "translation": ["Guten Morgen."],
        "id": ["common_voice_en_1"]})
    task = build_task("covost2:en-de")
    item, = task.items()
    assert item.references == ("Guten Morgen.",) and "German" in item.instruction
    assert [m.name for m in task.metrics] == ["bleu", "chrf", "agree_chrf"] and "bleu" in task.signatures()
    _loaded(item)


def test_item_content_is_the_version(hub):
    path = hub / "hlt-lab/voicebench/sd-qa/usa-00000-of-00001.parquet"
    _write(path, {"prompt": ["a"], "reference": ["b"]})
    v1 = build_task("voicebench:sd-qa").version
    _write(path, {"prompt": ["a changed"], "reference": ["b"]})
    assert build_task("voicebench:sd-qa").version != v1


def test_without_a_copy_the_error_says_how_to_get_it(hub):
    with pytest.raises(Exception, match="huggingface-cli download --repo-type dataset openslr/librispeech_asr"):
        build_task("librispeech:test-clean")


def test_without_datasets_says_how_to_install(hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install"):
        build_task("librispeech:test-clean")


def test_list_shows_benchmarks_and_local_availability(hub, capsys):
    from bench.cli import main

    _write(hub / "openslr/librispeech_asr/clean/test-00000-of-00001.parquet", {"text": ["A"], "id": ["x"]})
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.split("\nbenchmarks:")[1].split("\nsuites:")[0].splitlines()
    at = next(i for i, l in enumerate(lines) if "librispeech:test-clean" in l)
    assert "CC BY 4.0" in lines[at] and str(hub / "openslr/librispeech_asr") in lines[at + 1]
    at = next(i for i, l in enumerate(lines) if "voicebench:sd-qa" in l)
    assert "not found locally" in lines[at + 1]


def test_ifeval_checks_follow_the_reference_rules():
    from tasks.voicebench import ifeval_followed as f

    assert f('"quoted"', ["startend:quotation"], [{}]) == [True]
    assert f("Title <<My Poem>> here", ["detectable_format:title"], [{}]) == [True]
    assert f("```json\n{\"a\": 1}\n```", ["detectable_format:json_format"], [{}]) == [True]
    assert f("* one\n* two\n- three", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}]) == [True]
    assert f("text\nP.S. bye", ["detectable_content:postscript"], [{"postscript_marker": "P.S."}]) == [True]
    assert f("a *b* **c**", ["detectable_format:number_highlighted_sections"], [{"num_highlights": 2}]) == [True]
    assert f("p1 *** p2", ["length_constraints:number_paragraphs"], [{"num_paragraphs": 2}]) == [True]
    assert f("banana", ["keywords:letter_frequency"], [{"letter": "a", "let_frequency": 3,
                                                      "let_relation": "at least"}]) == [True]
    assert f("It is okay. Is it over?", ["startend:end_checker"], [{"end_phrase": "Is it over?"}]) == [True]
    assert f("   ", ["punctuation:no_comma"], [{}]) == [False]  # an empty answer follows nothing


def test_heysquad_transcribed_forms_from_the_public_data(shared_data):
    human, machine = build_task("heysquad-human-transcribed"), build_task("heysquad-machine-transcribed")
    h, m = human.items(2), machine.items(2)
    assert h[0].turn.text == "what year was cassimir koloski born in warsaw" and not h[0].turn.spoken
    assert m[0].references == h[0].references == ("1745",) and m[0].turn.text != h[0].turn.text
    assert "Casimir Pulaski" in m[0].instruction and len(machine.items()) == 1002
