"""CTC Conformer ASR: a few real training steps (loss falls), decoding a tiny saved checkpoint,
checkpoint round trip in the parakeet layout, the cascade around it, and the ASR task's corpus WER."""
import numpy as np
import pytest
import torch

from bench.types import Audio, Request, Turn
from systems.asr.ctc import CTCASR, ctc_collapse, train_tokenizer

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "she reads a book every night",
             "we walked to the river", "the sun is bright today", "he plays the piano well"]


@pytest.fixture(scope="module")
def tiny_asr():
    from systems.asr.train import PRESETS, ASRTrainConfig

    cfg = ASRTrainConfig(**PRESETS["tiny"])
    torch.manual_seed(0)
    tok = train_tokenizer(SENTENCES * 5, cfg.vocab_size)
    return CTCASR.build(tok, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn, cfg.kernel, cfg.subsampling, cfg.dropout), cfg


def _batch(asr, texts):
    from bench.tts import Voice, synthesize

    wavs = [synthesize(t, Voice("en-us", 170, 50), cache=False).samples for t in texts]
    f = asr.fe(wavs, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)  # the reference extractor
    ids = [asr.encode_text(t) for t in texts]
    labels = torch.full((len(ids), max(map(len, ids))), asr.blank, dtype=torch.long)
    for i, s in enumerate(ids):
        labels[i, :len(s)] = torch.tensor(s)
    return f["input_features"], f["attention_mask"], labels, wavs


def test_training_steps_reduce_the_loss(tiny_asr):
    from systems.asr.train import train_step

    asr, cfg = tiny_asr
    feats, mask, labels, _ = _batch(asr, SENTENCES[:4])
    opt = torch.optim.AdamW(asr.model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    asr.model.train()
    cfg.freq_masks = cfg.time_masks = 0  # overfit one batch: no augmentation noise in the signal
    losses = [train_step(asr.model, opt, ((feats, mask), labels), 3e-3, cfg, g) for _ in range(12)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_features_from_padded_waveforms_match_the_extractor(tiny_asr):
    """The GPU-run path (log_mel on a padded batch, in the main process) gives the extractor's features."""
    from systems.asr.ctc import log_mel
    from systems.asr.train import train_step

    asr, cfg = tiny_asr  # dropout 0: two steps on the same batch see the same model
    feats, mask, labels, wavs = _batch(asr, SENTENCES[:3])
    lengths = torch.tensor([len(w) for w in wavs])
    waves = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(w, dtype=torch.float32) for w in wavs], batch_first=True)
    ours, our_mask = log_mel(asr.fe, waves, lengths)
    assert torch.equal(our_mask, mask.bool())
    torch.testing.assert_close(ours, feats, atol=1e-4, rtol=1e-4)
    import copy  # a preprocessor config without pre-emphasis (allowed by the extractor) works the same way

    plain = copy.deepcopy(asr.fe)
    plain.preemphasis = None
    ref = plain(wavs, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    torch.testing.assert_close(log_mel(plain, waves, lengths)[0], ref["input_features"], atol=1e-4, rtol=1e-4)
    # a step fed waveforms (as on a GPU run) trains as one fed features
    opt = torch.optim.SGD(asr.model.parameters(), lr=0.0)
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    assert train_step(asr.model, opt, ((waves, lengths), labels), 0.0, cfg, g[0], asr.fe) == pytest.approx(
        train_step(asr.model, opt, ((feats, mask), labels), 0.0, cfg, g[1]), rel=1e-4)


def test_spec_augment_masks_bands_inside_each_utterance():
    from systems.asr.train import ASRTrainConfig, spec_augment

    cfg = ASRTrainConfig(freq_masks=2, freq_mask_width=15, time_masks=2, time_mask_frac=0.2)
    x = torch.ones(4, 50, 80)
    mask = torch.arange(50)[None] < torch.tensor([50, 40, 20, 10])[:, None]
    g = torch.Generator().manual_seed(0)
    out = torch.stack([spec_augment(x, mask, cfg, g) for _ in range(50)])  # (draws, B, T, F)
    zero_bins = (out == 0).all(2)  # (draws, B, F): mel bins masked over all frames
    assert 0 < zero_bins.sum(-1).float().mean() <= 2 * 15 and zero_bins.sum(-1).max() <= 30
    zero_frames = (out == 0).all(3)  # (draws, B, T)
    assert zero_frames.any()
    assert zero_frames.sum(-1).max() <= 2 * 10  # at most two spans of 20 % of the longest utterance
    assert not zero_frames[:, 3, 10:].any()  # spans start and end inside the utterance
    assert torch.equal(x, torch.ones(4, 50, 80))  # the input is untouched


def test_decode_a_tiny_saved_checkpoint(tiny_asr, tmp_path):
    """Save in the parakeet layout (config.json, model.safetensors, tokenizer, preprocessor config),
    reload through the same class, and get the same greedy transcripts, batched or not."""
    asr, _ = tiny_asr
    asr.save_pretrained(tmp_path / "ckpt")
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= names
    again = CTCASR.from_pretrained(tmp_path / "ckpt")
    _, _, _, wavs = _batch(asr, SENTENCES[:3])
    audios = [Audio(w) for w in wavs]
    assert again.transcribe(audios) == asr.transcribe(audios)
    assert again.transcribe(audios) == [again.transcribe([a])[0] for a in audios]
    assert again.identity.startswith("ckpt@")


def test_ctc_collapse():
    assert ctc_collapse([0, 5, 5, 0, 5, 7, 7, 0], blank=0) == [5, 5, 7]
    assert ctc_collapse([], blank=0) == []


def test_tokenizer_roundtrip():
    tok = train_tokenizer(SENTENCES * 3, 64)
    assert tok.pad_token_id == 0
    ids = tok("the cat ran", add_special_tokens=False)["input_ids"]
    assert 0 not in ids and tok.decode(ids) == "the cat ran"


class _FakeASR:
    identity = "fake-asr"

    def __init__(self):
        self.calls = 0

    def transcribe(self, audios):
        self.calls += 1
        return [f"heard {a.samples.size}" for a in audios]


def test_cascade_reads_every_spoken_turn_through_asr(tiny):
    from systems.cascade import Cascade
    from systems.llm import DecodeConfig

    asr = _FakeASR()
    c = Cascade(asr, tiny, DecodeConfig(8))
    spoken = lambda n: Turn("user", audio=Audio(np.full(n, 0.1, np.float32)), transcript="gold")
    reqs = [Request(spoken(1600), history=(spoken(800), Turn("assistant", text="ok"), Turn("user", text="typed"))),
            Request(spoken(3200))]
    gens = c.generate_batch(reqs)
    assert asr.calls == 1  # one batched ASR call for all spoken turns
    assert [g.transcript for g in gens] == ["heard 1600", "heard 3200"]
    assert gens[0].seconds["audio"] == pytest.approx(0.15) and gens[1].seconds["audio"] == pytest.approx(0.2)
    msgs = c._messages(reqs[0], {id(reqs[0].turn): "X", id(reqs[0].history[0]): "Y"})
    assert [m["content"] for m in msgs[1:]] == ["Y", "ok", "typed", "X"]
    assert "speech recognition" in msgs[0]["content"]
    only = c.generate_batch([Request(spoken(1600), transcript_only=True)])[0]
    assert only.text == only.transcript == "heard 1600" and only.tokens == 0
    assert Cascade(asr, tiny, DecodeConfig(8), warn=False).fingerprint() != c.fingerprint()


def test_cascade_hears_each_clip_once(tiny):
    """The same speech again (response-ppl scores the spoken-QA clips; a turn twice in a batch) takes the
    transcript already made: one ASR call for the new clips only, none when every clip was heard."""
    from systems.cascade import Cascade
    from systems.llm import DecodeConfig

    asr = _FakeASR()
    c = Cascade(asr, tiny, DecodeConfig(4))
    clip = lambda n: Turn("user", audio=Audio(np.full(n, 0.1, np.float32)))  # noqa: E731
    seen: list[list[int]] = []
    asr.transcribe = lambda audios: seen.append([a.samples.size for a in audios]) or [f"heard {a.samples.size}" for a in audios]
    first = c.generate_batch([Request(clip(800), transcript_only=True), Request(clip(800), transcript_only=True),
                              Request(clip(1600), transcript_only=True)])
    again = c.score_batch([(Request(clip(1600)), "ok"), (Request(clip(800)), "ok")])
    assert seen == [[800, 1600]] and len(again) == 2
    assert [g.transcript for g in first] == ["heard 800", "heard 800", "heard 1600"]
    c.generate_batch([Request(clip(2400), transcript_only=True), Request(clip(800), transcript_only=True)])
    assert seen[-1] == [2400]
    c.forget()
    c.heard_max = 1  # the oldest transcripts go first
    c.generate_batch([Request(clip(800), transcript_only=True)])
    c.generate_batch([Request(clip(1600), transcript_only=True), Request(clip(800), transcript_only=True)])
    assert seen[-2:] == [[800], [1600]] and len(c._heard) == 1


def test_whisper_decodes_each_clip_as_it_would_alone(monkeypatch):
    """Whisper pads a clip by its own length (8 s, or its length rounded up to 4 s) and caps its transcript
    by its own length, so a transcript never depends on the clips decoded beside it; clips of one padded
    length decode together."""
    from systems.asr import whisper as W

    asr = W.WhisperASR.__new__(W.WhisperASR)
    asr.pad_seconds, asr.bucket_seconds, asr.max_new_tokens = 8.0, 4.0, 128
    calls = []

    def encode(audios, min_seconds=None):  # (B, frames / 2, 1): each row says how long its input was padded
        calls.append((len(audios), min_seconds))
        n = int(round(max(min_seconds, *(a.seconds for a in audios)) * 100)) // 2
        return torch.full((len(audios), n, 1), float(n))

    class Model:  # "generates" max_new_tokens tokens that name the encoder length (no EOT)
        device = "cpu"

        def generate(self, encoder_outputs, decoder_input_ids, max_new_tokens, **kw):
            n = encoder_outputs.last_hidden_state[:, 0, 0].long()
            return torch.cat([decoder_input_ids, (n[:, None] % 1000).repeat(1, max_new_tokens)], 1)

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(f"w{t}x{k}" for k, t in enumerate(ids))  # (no loops to cut)

    asr.encode, asr.model, asr.tokenizer = encode, Model(), Tok()
    secs = [1.0, 3.5, 7.9, 9.0, 11.5, 12.5, 20.0, 2.0]
    audios = [Audio(np.full(int(s * 16000), 0.1, np.float32)) for s in secs]
    together = asr.transcribe(audios)
    assert sorted(calls) == sorted([(4, 8.0), (2, 12.0), (1, 16.0), (1, 20.0)])  # one call per padded length
    calls.clear()
    alone = [asr.transcribe([a])[0] for a in audios]
    assert together == alone
    assert [len(t.split()) for t in together] == [min(128, int(6 * s) + 10) for s in secs]
    assert asr.padded_seconds(audios[3]) == 12.0 and asr.padded_seconds(audios[0]) == 8.0


def test_cascade_without_checkpoint_says_how_to_get_one(tmp_path):
    from bench.plugins import Context
    from systems.cascade import ctc_asr

    with pytest.raises(FileNotFoundError, match="train asr"):
        ctc_asr(Context().for_system({"asr": str(tmp_path / "none")}))


def test_wer_metric_is_corpus_level():
    from bench.scoring import score_metric
    from bench.types import Generation, Item
    from tasks.builtin import ASR

    wer = next(m for m in ASR.metrics if m.name == "wer")
    items = [Item(id="a", turn=Turn("user", transcript="x"), references=("the cat sat down",)),
             Item(id="b", turn=Turn("user", transcript="x"), references=("dog",))]
    outs = {"a": Generation(text="", transcript="the cat sat down"), "b": Generation(text="", transcript="cow")}
    assert score_metric(wer, items, outs, {})["value"] == pytest.approx(1 / 5)  # not (0 + 1) / 2


def test_whisper_loop_cut():
    from systems.asr.whisper import cut_loops

    assert cut_loops("the first one, the first one, the first one, the first one") == "the first one,"
    assert cut_loops("a b c a b c a b c d") == "a b c"
    assert cut_loops("yes yes we can") == "yes yes we can"  # two repeats are speech, not a loop
    assert cut_loops("one two three") == "one two three"
    assert cut_loops("we are popular with gamers. we are popular with gamers. we are") == "we are popular with gamers."


def test_lexicon_snaps_near_misses_only():
    from systems.asr.ctc import Lexicon

    lex = Lexicon(["experimental", "the", "results", "were", "cat"])
    assert lex("the experementl results wer good") == "the experimental results were good"
    assert lex("zzzzzz") == "zzzzzz" and lex("") == ""


def test_training_continues_from_an_exported_checkpoint(tmp_path, monkeypatch):
    """What a new machine does with the committed checkpoint: export, then continue at its step."""
    import json

    from systems.asr import train as T

    monkeypatch.setattr(T, "corpus", lambda cfg: SENTENCES * 3)
    monkeypatch.setattr(T, "dev_set", lambda cfg: [])
    cfg = T.ASRTrainConfig(**T.PRESETS["tiny"])
    cfg.steps, cfg.ckpt_every = 3, 100
    T.train(cfg, tmp_path / "a", progress=False)
    assert T.main(["--preset", "tiny", "--out", str(tmp_path / "a"), "--export", str(tmp_path / "exp")]) == 0
    assert json.loads((tmp_path / "exp" / "train_config.json").read_text())["step"] == 3
    assert (tmp_path / "exp" / "lexicon.txt").read_text().split()[:2] == ["a", "book"]
    from safetensors import safe_open

    with safe_open(tmp_path / "exp" / "model.safetensors", "pt") as f:  # exported at half the size...
        assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F16", "I64"}
    trained = CTCASR.from_pretrained(tmp_path / "a" / "ckpt").model.state_dict()
    exported = CTCASR.from_pretrained(tmp_path / "exp").model.state_dict()
    for k, v in exported.items():  # ...and loaded as float32 again, equal to float16 precision
        assert v.dtype == trained[k].dtype and torch.allclose(v.float(), trained[k].float(), rtol=1e-3, atol=1e-4)
    cfg.steps, cfg.batch_size, cfg.hidden, cfg.lr = 5, 3, 48, 0.5
    out = T.train(cfg, tmp_path / "b", progress=False, init_from=tmp_path / "exp",
                  given=("steps", "batch_size", "hidden"))
    assert out["step"] == 5
    saved = json.loads((tmp_path / "b" / "ckpt" / "train_config.json").read_text())
    # typed options win, the rest come from the exported run, the architecture from its weights
    assert saved["config"]["batch_size"] == 3 and saved["config"]["lr"] == 3e-3 and saved["config"]["hidden"] == 32
    assert saved["start_step"] == 3


def test_learning_rate_warms_up_again_after_init_from():
    from systems.asr.train import ASRTrainConfig, lr_at

    cfg = ASRTrainConfig(lr=1.0, warmup=10, steps=1000)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert lr_at(500, cfg, start=500) < 0.2 * lr_at(520, cfg, start=500)
    # the cosine starts again at the peak after the new warm-up and still ends at 5 % on the last step
    assert lr_at(509, cfg, start=500) == 1.0 and lr_at(1000, cfg, start=500) == pytest.approx(0.05)
    assert lr_at(755, cfg, start=500) == pytest.approx(0.525, abs=0.01)  # half-way down


def test_speech_stream_mixes_in_common_words():
    """With wordlist_frac, that share of utterances are random common words (vowelled ones only,
    so espeak reads rather than spells them); without it, only training sentences."""
    import random

    from systems.asr.train import ASRTrainConfig, SpeechStream

    words = {"the": 1.0, "mirror": 0.01, "dnd": 0.5, "shower": 0.001}
    mixed = SpeechStream(SENTENCES, None, ASRTrainConfig(wordlist_frac=0.5), 0, words=words)
    texts = [mixed.text(random.Random(i)) for i in range(200)]
    random_words = [t for t in texts if t not in SENTENCES]
    assert 60 < len(random_words) < 140
    assert all(4 <= len(t.split()) <= 12 and set(t.split()) <= {"the", "mirror", "shower"} for t in random_words)
    plain = SpeechStream(SENTENCES, None, ASRTrainConfig(), 0, words=words)
    assert all(plain.text(random.Random(i)) in SENTENCES for i in range(50))


def test_training_text_is_the_committed_sentences_whatever_the_python():
    """The stdlib prose is read from the committed file (its extraction varies across Python
    versions): normalised to the ASR alphabet, 5-20 words, and never a dev or test sentence."""
    from corpus import ALPHABET, suite_texts
    from systems.asr.corpus import STDLIB_FILE, stdlib_sentences, training_sentences

    assert STDLIB_FILE.exists()
    prose = stdlib_sentences()
    assert len(prose) > 5000 and len(set(prose)) == len(prose)
    assert all(set(s) <= ALPHABET and 5 <= len(s.split()) <= 20 for s in prose)
    held = set(suite_texts("dev")) | set(suite_texts("test"))
    text = training_sentences()
    assert not held & set(text) and set(prose) - held <= set(text)


def test_step_fitter_ends_the_schedule_with_the_time(monkeypatch):
    """50 steps after the start the clock starts; 250 steps later (or, when steps are slow, once 20 steps
    are measured and a fifth of the time is gone) the measured speed sets the step count that fits 95 %
    of the time left; never more than planned, and fitted once."""
    from systems import training

    now = [0.0]
    monkeypatch.setattr(training.time, "time", lambda: now[0])
    fit = training.StepFitter(first=1000, max_minutes=1.0, t_start=0.0)
    now[0] = 1.0
    assert fit(1001, 5000) == 5000
    now[0] = 10.0
    assert fit(1050, 5000) == 5000  # the clock starts
    now[0] = 11.0
    assert fit(1060, 5000) == 5000  # 10 steps measured: too few, and a fifth of the minute is not gone
    now[0] = 35.0
    assert fit(1300, 5000) == 1300 + int(0.95 * 25 * 10)  # 25 s left at 10 steps/s
    slow = training.StepFitter(first=0, max_minutes=10.0, t_start=0.0)  # 1.5 s a step
    now[0] = 100.0
    assert slow(50, 5000) == 5000
    now[0] = 119.5
    assert slow(63, 5000) == 5000  # 13 measured steps
    now[0] = 130.0
    assert slow(70, 5000) == 70 + int(0.95 * 470 / 1.5)  # 20 measured, 130 s > a fifth of 600 s
    now[0] = 200.0
    assert slow(80, 380) == 380  # fitted once: the caller's count from then on
    assert training.StepFitter(0, None, 0.0)(300, 5000) == 5000  # no time budget: unchanged
    assert training.StepFitter(0, 1.0, 0.0, enabled=False)(300, 5000) == 5000
