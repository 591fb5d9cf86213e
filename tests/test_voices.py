"""Voice engines (espeak, Kokoro, piper) behind one interface, and the rules on what training may hear."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from bench import kokoro_tts, tts, voices
from bench.types import Audio, Item, Turn

ROOT = Path(__file__).resolve().parents[1]


def test_kokoro_clip_is_a_function_of_text_and_voice_and_its_engine_is_in_the_key(tmp_path, monkeypatch):
    v = kokoro_tts.KokoroVoice.sample("test", 7)
    a = kokoro_tts.speak("The capital of France is Paris.", v, cache=False)
    b = kokoro_tts.speak("The capital of France is Paris.", v, cache=False)
    assert a.sample_rate == 16000 and 1.0 < a.seconds < 6.0
    assert np.array_equal(a.samples, b.samples)  # no random op in the graph: bit for bit
    other = kokoro_tts.speak("The capital of France is Paris.", kokoro_tts.KokoroVoice(dialect="en-gb-x-rp"), cache=False)
    assert other.samples.shape != a.samples.shape or not np.array_equal(other.samples, a.samples)
    assert v.name in a.origin
    ident = kokoro_tts.identity()
    assert kokoro_tts.KOKORO.identity in ident and "onnxruntime-" in ident and tts.espeak_version() in ident
    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path))
    kokoro_tts.speak("Paris.", v)
    first = {p.name for p in (tmp_path / "tts-kokoro").rglob("*.npy")}
    monkeypatch.setattr(kokoro_tts, "identity", lambda: ident + "-another-version")
    kokoro_tts.speak("Paris.", v)
    assert len(first) == 1 and len({p.name for p in (tmp_path / "tts-kokoro").rglob("*.npy")}) == 2  # a new key


def test_kokoro_speaks_english_from_espeak_ipa_in_its_symbol_set():
    ps = kokoro_tts.phonemes("Hello there, Mr. Smith! It costs 3.5 dollars.", "en-us")
    vocab = kokoro_tts._model()[1]
    assert set(ps) <= set(vocab) and "," in ps and "!" in ps
    assert "θɹˈiː pɔɪnt fˈaɪv" in ps  # 3.5 is one clause, read as a number
    assert kokoro_tts.phonemes("colour", "en-gb-x-rp") != kokoro_tts.phonemes("colour", "en-us")  # dialects differ
    assert kokoro_tts._pieces("a, " * 400)[0].endswith(",") and all(len(p) <= kokoro_tts.MAX_TOKENS
                                                                    for p in kokoro_tts._pieces("ab " * 900))


def test_voice_splits_hold_out_a_style_and_an_espeak_variant():
    for split in ("train", "dev", "test"):
        drawn = [kokoro_tts.KokoroVoice.sample(split, i) for i in range(200)]
        assert {v.split for v in drawn} == {split}
        assert len({v.name for v in drawn}) > 150  # blends, dialects and speeds: many voices
        assert all(tts.split_of(n) == split for n in tts.voices(split))
    train_styles = {s for i in range(500) for s, _ in kokoro_tts.KokoroVoice.sample("train", i).blend}
    assert train_styles.isdisjoint(kokoro_tts.HELD_OUT.values())
    assert {v.dialect for v in (kokoro_tts.KokoroVoice.sample("test", i) for i in range(100))} == set(kokoro_tts.DIALECTS)
    with pytest.raises(ValueError, match="sum to 1"):
        kokoro_tts.KokoroVoice((("jf_alpha", 0.5), ("jm_kumo", 0.4)))


def test_a_voice_mix_draws_only_training_voices_and_refuses_the_evaluation_engine():
    with pytest.raises(voices.TrainingVoiceError, match="evaluation only"):
        voices.VoiceMix.parse("espeak,piper")
    with pytest.raises(ValueError, match="unknown voice engine"):
        voices.VoiceMix.parse("espeak,joe")
    for eng, voice in ((voices.engine("espeak"), tts.Voice("en-us+f4")),
                       (voices.engine("kokoro"), kokoro_tts.KokoroVoice.sample("test", 1)),
                       (voices.engine("kokoro"), kokoro_tts.KokoroVoice.sample("dev", 1)),
                       (voices.engine("piper"), 1.0)):
        with pytest.raises(voices.TrainingVoiceError):
            voices.trainable(eng, voice)
    mix = voices.VoiceMix.parse("espeak=3,kokoro=1")
    assert mix.tag == "espeak3-kokoro1" and voices.VoiceMix.parse("espeak").tag == "espeak"
    rng = random.Random(0)
    assert {mix.draw(rng).name for _ in range(200)} == {"espeak", "kokoro"}


def test_an_espeak_mix_draws_what_the_recipes_drew_before_mixes():
    a, b = random.Random(5), random.Random(5)
    clip = voices.VoiceMix.parse("espeak").speak("hello world", a)
    before = tts.synthesize("hello world", tts.Voice.sample("train", b.random()), cache=False)
    assert np.array_equal(clip.samples, before.samples) and a.random() == b.random()


class _Recorder:
    """Engines that record each voice asked for and speak a short tone (no synthesis)."""

    def __init__(self, monkeypatch):
        self.heard = []
        real = {n: voices.ENGINES[n]() for n in voices.ENGINES}
        for name, eng in real.items():
            def speak(text, voice, cache=True, _name=name):
                self.heard.append((_name, voice))
                return Audio(np.sin(np.arange(8000 + 80 * len(text)) * 0.05).astype(np.float32) * 0.1)
            fake = voices.Engine(eng.name, eng.trainable, eng.sample, eng.split_of, speak, eng.identity, eng.slow)
            monkeypatch.setitem(voices.ENGINES, name, lambda fake=fake: fake)


def test_no_training_recipe_hears_a_test_or_dev_voice_or_the_evaluation_voice(monkeypatch, tmp_path):
    """The three recipes' speech (ASR stream, bridge voice passes, end-to-end batches) through the mix:
    every clip a training voice of espeak or Kokoro, both engines heard by default."""
    from systems.asr.train import ASRTrainConfig, SpeechStream
    from systems.audiochatllama.train import E2ETrainConfig, sample_batch
    from systems.audiochatllama.train_bridge import BridgeTrainConfig, _encode_pass

    rec = _Recorder(monkeypatch)

    class Tok:
        pad_token_id = 0

        def __call__(self, t, add_special_tokens=False):
            return {"input_ids": [1 + (ord(c) % 30) for c in t]}

    stream = iter(SpeechStream(["the cat sat", "a dog ran far"], Tok(), ASRTrainConfig(batch_size=8, workers=0), 0))
    for _ in range(4):
        next(stream)
    rows = [{"transcript": "what is the capital of france", "instruction": None, "ids": [1, 2]}]
    for seed in range(8):
        sample_batch(rows, E2ETrainConfig(batch_size=4), random.Random(seed), np.random.default_rng(seed))

    class Enc:
        def eval(self):
            pass

        def base_states(self, wavs):
            import torch
            return [torch.zeros(3, 2) for _ in wavs]

    _encode_pass(Enc(), [f"sentence {i}" for i in range(40)], BridgeTrainConfig(), 0, progress=False)
    engines = {n for n, _ in rec.heard}
    assert engines == {"espeak", "kokoro"} and len(rec.heard) == 32 + 32 + 40
    for name, voice in rec.heard:
        voices.trainable(voices.engine(name), voice)  # raises on any test or dev voice


def test_recipes_pick_no_voice_and_read_no_evaluation_data():
    """All training speech goes through bench.voices.VoiceMix; no recipe names the public evaluation
    data (../shared/data, $AUDIOCHAT_BENCH_DATA) or draws a voice of its own."""
    recipes = [ROOT / "systems" / "asr" / "train.py", ROOT / "systems" / "audiochatllama" / "train.py",
               ROOT / "systems" / "audiochatllama" / "train_bridge.py", ROOT / "systems" / "audiochatllama" / "data.py",
               ROOT / "systems" / "asr" / "corpus.py", ROOT / "systems" / "training.py"]
    for f in recipes:
        text = f.read_text()
        assert "VoiceMix" in text or "synthesize(" not in text.replace("synthesize(t, v)", ""), f
        assert not re.search(r"sample\(\s*[\"']train", text), f
        # the public sets are read through tasks (the loaders, $AUDIOCHAT_BENCH_DATA): a recipe imports neither
        assert not re.search(r"^\s*(from|import) tasks\b", text, re.M), f
        assert "AUDIOCHAT_BENCH_DATA" not in text and "public_data_dir" not in text, f


def test_voice_conditions_respeak_in_their_family_and_rows_name_it():
    from bench.conditions import apply
    from bench.scoring import score_task
    from bench.types import Generation, Metric, Task

    espeak = Turn("user", audio=Audio(np.full(16000, 0.1, np.float32)), transcript="what is the capital of italy")
    item = Item(id="q1", turn=espeak)
    a, b = apply("voice-kokoro", item), apply("voice-kokoro", item)
    assert np.array_equal(a.turn.audio.samples, b.turn.audio.samples) and a.turn.audio.origin.startswith("kokoro:jf_nezumi")
    conv = Item(id="q2", turn=espeak, history=(espeak, Turn("assistant", text="rome")))
    c = apply("voice-kokoro", conv)
    assert c.turn.audio.origin.split(":")[1] == c.history[0].audio.origin.split(":")[1]  # one voice a conversation

    class T(Task):
        name, version = "t", "1"
        metrics = (Metric("m", "item", True, lambda it, g, ctx: 1.0),)

    outs = {"s": {"q1": Generation("x")}}
    for cond, family in (("voice-kokoro", "kokoro"), ("voice-joe", "piper"), ("clean", "recorded")):
        assert {r["voice_family"] for r in score_task(T(), cond, [item], outs)} == {family}
    assert voices.family_of("clean", [Item(id="t", turn=Turn("user", text="hi"))]) == "typed"
