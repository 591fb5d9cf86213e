"""Hostile input: every case ends as a per-item failure with its reason or a clear CLI error,
never a traceback, and the summary counts the failures."""
import json
import random

import numpy as np
import pytest
import soundfile as sf

from bench.audio import load_audio
from bench.cli import main
from bench.types import AudioError


def _tone(seconds, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return 0.3 * np.sin(2 * np.pi * 300 * t)


@pytest.fixture
def bad_dataset(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    sf.write(d / "good.wav", _tone(1.0), 16000)
    (d / "truncated.wav").write_bytes((d / "good.wav").read_bytes()[:30])  # cut inside the header
    (d / "wrong_header.wav").write_bytes(b"NOTRIFF" + bytes(range(256)) * 20)
    sf.write(d / "zero.wav", np.zeros(0), 16000)
    nan = _tone(1.0)
    nan[10] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(16000), 16000)
    sf.write(d / "ten_minutes.wav", np.tile(_tone(1.0, 8000), 600), 8000)
    (d / "mp3_as_wav.wav").write_bytes(b"ID3\x03\x00\x00\x00" + b"\xff\xfb" * 500)
    lines = [
        {"id": "good", "audio": "good.wav", "transcript": "hello", "references": ["olleh"]},
        {"id": "truncated", "audio": "truncated.wav", "references": ["x"]},
        {"id": "wrong-header", "audio": "wrong_header.wav", "references": ["x"]},
        {"id": "zero", "audio": "zero.wav", "references": ["x"]},
        {"id": "nan", "audio": "nan.wav", "references": ["x"]},
        {"id": "silent", "audio": "silent.wav", "references": ["x"]},
        {"id": "ten-minutes", "audio": "ten_minutes.wav", "references": ["x"]},
        {"id": "mp3", "audio": "mp3_as_wav.wav", "references": ["x"]},
        {"id": "missing-file", "audio": "nope.wav", "references": ["x"]},
        {"id": "unknown-voice", "tts": "hello there", "voice": "en-us+nosuchvoice", "references": ["x"]},
        {"id": "no-references", "tts": "hello there"},
        {"id": "typed", "text": "hello"},
    ]
    (d / "manifest.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return d


EXPECTED = {"truncated": "cannot read", "wrong-header": "cannot read", "zero": "empty", "nan": "NaN",
            "silent": "silent", "ten-minutes": "limit", "mp3": "cannot read", "missing-file": "no such file",
            "unknown-voice": "unknown espeak voice"}


def test_bad_items_fail_alone_with_their_reasons(bad_dataset, tmp_path, capsys, fakes_registered):
    rc = main(["run", "--systems", "fake", "--tasks", f"manifest:{bad_dataset / 'manifest.jsonl'}",
               "--output-dir", str(tmp_path / "runs"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0 and "Traceback" not in cap.err
    run_dir = cap.out.strip().splitlines()[-1]
    outs = {o["item_id"]: o for o in map(json.loads, open(f"{run_dir}/outputs.jsonl"))}
    for item_id, reason in EXPECTED.items():
        assert outs[item_id]["status"] == "failed", item_id
        assert reason in outs[item_id]["error"], (item_id, outs[item_id]["error"])
    for ok in ("good", "no-references", "typed"):
        assert outs[ok]["status"] == "ok", outs[ok]
    assert f"{len(EXPECTED)} output(s) failed" in cap.out
    assert f"{len(EXPECTED)} item(s) failed" in cap.err


@pytest.mark.parametrize("line,message", [
    ({"id": "x", "audio": "../outside.wav"}, "outside"),
    ({"id": "x", "audio": "/etc/passwd"}, "outside"),
    ({"audio": "good.wav"}, "id"),
    ({"id": "x"}, "audio"),
    ({"id": "x", "text": "hi", "references": "not a list"}, "references"),
    ({"id": "x", "text": "hi", "refrences": ["typo"]}, "refrences"),
    ({"id": "x", "text": "hi", "history": [{"role": "robot", "text": "?"}]}, "role"),
])
def test_malformed_manifests_are_clear_cli_errors(bad_dataset, tmp_path, capsys, line, message, fakes_registered):
    m = bad_dataset / "bad.jsonl"
    m.write_text(json.dumps({"id": "ok", "text": "fine"}) + "\n" + json.dumps(line) + "\n")
    rc = main(["run", "--systems", "fake", "--tasks", f"manifest:{m}", "--output-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "error:" in err and "bad.jsonl:2:" in err and message in err


def test_not_json_at_all_is_a_clear_cli_error(tmp_path, capsys, fakes_registered):
    m = tmp_path / "m.jsonl"
    m.write_bytes(b"\x00\xff garbage {{{\n")
    assert main(["run", "--systems", "fake", "--tasks", f"manifest:{m}", "--output-dir", str(tmp_path / "r")]) == 2
    assert "m.jsonl" in capsys.readouterr().err


def test_random_bytes_and_truncations_only_ever_raise_audio_errors(tmp_path):
    """200 seeded cases: random bytes behind real and fake headers, and a valid FLAC cut at random
    points. Each loads or raises AudioError: nothing else escapes."""
    rng = random.Random(1234)
    good = tmp_path / "good.flac"
    sf.write(good, _tone(0.5), 16000, format="FLAC")
    data = good.read_bytes()
    outcomes = {"loaded": 0, "AudioError": 0}
    for k in range(200):
        p = tmp_path / f"f{k}.{rng.choice(['wav', 'flac', 'ogg'])}"
        kind = k % 4
        if kind == 0:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000)))
        elif kind == 1:
            blob = b"RIFF" + bytes(rng.randrange(256) for _ in range(rng.randrange(4, 600)))
        elif kind == 2:
            blob = data[: rng.randrange(0, len(data))]
        else:  # corrupt bytes inside a valid file
            b = bytearray(data)
            for _ in range(rng.randrange(1, 50)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            blob = bytes(b)
        p.write_bytes(blob)
        try:
            a = load_audio(p)
            assert np.isfinite(a.samples).all() and a.sample_rate == 16000
            outcomes["loaded"] += 1
        except AudioError as e:
            assert p.name in str(e)
            outcomes["AudioError"] += 1
    assert sum(outcomes.values()) == 200 and outcomes["AudioError"] > 100


def test_safe_loading_in_the_source():
    """safetensors for checkpoints; torch.load only with weights_only=True; no hard-coded
    trust_remote_code=True (it must come from the user's flag)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("bench/**/*.py"), *root.glob("systems/**/*.py"), *root.glob("tasks/**/*.py")]:
        src = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", src):
            assert "weights_only=True" in m.group(1), f"{path}: {m.group(0)}"
        assert "trust_remote_code=True" not in src, path
        assert "pickle.load" not in src, path
