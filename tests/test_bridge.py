"""The token bridge: the CTC head over the LLM's own tokens, its collapse, stage 1 training (loss falls,
resumes), the bridge model reading in-distribution embeddings at step 0, end-to-end steps whose loss
falls, typed turns still exactly the frozen LLM, and the token-CTC cascade's ASR."""
import json

import pytest
import torch

from bench.types import Audio, Request, Turn
from systems.audiochatllama.bridge import (BLANK, FALLBACK, TokenCTCASR, TokenCTCEncoder, TokenVocab, collapse,
                                           speech_ids)
from tests.e2e_tiny import ROWS

TEXTS = [r["transcript"] for r in ROWS]


def _speech(text):
    from bench.tts import Voice, synthesize

    return Audio(synthesize(text, Voice("en-us", 170, 50), cache=False).samples)


def tiny_token_encoder(tokenizer, seed: int = 0) -> TokenCTCEncoder:
    from systems.asr.ctc import CTCASR, train_tokenizer

    torch.manual_seed(seed)
    asr = CTCASR.build(train_tokenizer(TEXTS * 5, 64), hidden=32, layers=1, heads=2, ffn=64, kernel=7,
                       subsampling=4, dropout=0.0)
    return TokenCTCEncoder(asr.model.encoder, asr.fe, TokenVocab.from_texts(tokenizer, TEXTS), {"llm": "tiny"})


@pytest.fixture(scope="module")
def llm():
    from tests.fakes import tiny_llm

    return tiny_llm()


def _bpe_tokenizer(texts):
    """A byte-level BPE tokenizer with merges learned from `texts` (word-sized tokens, as SmolLM2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk)


def test_spelling_vocab_keeps_frequent_tokens_and_spells_every_other_word(tmp_path):
    from collections import Counter

    from systems.audiochatllama.bridge import ClassTokenizer

    texts = TEXTS + ["the cat ran to the park", "the dog sat in the river", "a cat walked on the mat",
                     "what is the river of paris", "we sat in the park by the river"]
    tok = _bpe_tokenizer([" " + t for t in texts] * 3)
    counts = Counter(t for s in texts for t in speech_ids(tok, s))
    full, spelled = TokenVocab.from_texts(tok, texts), TokenVocab.from_texts(tok, texts, min_count=2)
    assert not full.spell and spelled.spell
    rare = [t for t, n in counts.items() if n < 2 and len(tok.convert_ids_to_tokens(t)) > 2]
    assert rare and not set(rare) & set(spelled.ids)  # rare word-sized tokens left out...
    assert {t for t, n in counts.items() if n >= 2} <= set(spelled.ids)  # ...the frequent ones all kept
    labels = ClassTokenizer(tok, spelled)
    for text in texts + ["hotdog pancake"]:  # ...and every word still written out, unseen ones too (of its letters)
        classes = labels(text)["input_ids"]
        assert FALLBACK not in classes and tok.decode(spelled.decode(classes)).strip() == text
    frequent = next(t for t, n in counts.most_common() if len(tok.convert_ids_to_tokens(t)) > 2)
    assert labels(tok.decode([frequent]).strip())["input_ids"] == spelled.encode([frequent])  # canonical where it can
    assert ClassTokenizer(tok, full)("hotdog pancake")["input_ids"].count(FALLBACK) > 0  # without spelling: lost
    enc = tiny_token_encoder(tok)
    TokenCTCEncoder(enc.encoder, enc.fe, spelled, {"llm": "tiny"}).save(tmp_path / "enc")
    again = TokenCTCEncoder.load(tmp_path / "enc").vocab
    assert again.spell and again.ids == spelled.ids


def test_vocab_maps_training_tokens_and_falls_back_for_the_rest(llm):
    tok = llm.tokenizer
    vocab = TokenVocab.from_texts(tok, TEXTS)
    ids = speech_ids(tok, "the cat")
    assert ids == tok(" the cat", add_special_tokens=False)["input_ids"]  # every word with its leading space
    classes = vocab.encode(ids)
    assert all(c >= 2 for c in classes) and vocab.decode(classes) == ids
    unseen = tok("Z", add_special_tokens=False)["input_ids"]  # no capital letters in the training text
    assert vocab.encode(unseen) == [FALLBACK] and vocab.decode([BLANK, FALLBACK]) == []
    assert len(vocab) == len(set(t for s in TEXTS for t in speech_ids(tok, s))) + 2


def test_collapse_drops_blanks_and_averages_each_run():
    # best classes per frame: blank, 5, 5, blank, 5, 7, 7 → segments [5], [5], [7]
    best = [BLANK, 5, 5, BLANK, 5, 7, 7]
    post = torch.full((7, 9), 0.01)
    for t, c in enumerate(best):
        post[t, c] = 0.9
    post[2, 3] = 0.5  # frame 2 leans towards class 3 as well: the segment's mean keeps that
    states = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, 2)
    p, s = collapse(post, states)
    assert p.shape == (3, 9)
    assert torch.allclose(s[:, 0], torch.tensor([1.5, 4.0, 5.5]))
    assert torch.allclose(p[0], (post[1] + post[2]) / 2) and torch.equal(p[2], post[5:7].mean(0))
    silent = torch.zeros(4, 9)
    silent[:, BLANK] = torch.tensor([0.9, 0.6, 0.95, 0.99])
    p, s = collapse(silent, states[:4])
    assert p.shape == (1, 9) and s[0, 0] == 1  # the least-blank frame, never an empty turn


def _labels(tokenizer, enc) -> torch.Tensor:
    """The head's classes of TEXTS, BLANK-padded (B, L)."""
    from systems.audiochatllama.bridge import ClassTokenizer

    ct = ClassTokenizer(tokenizer, enc.vocab)
    ids = [ct(t)["input_ids"] for t in TEXTS]
    labels = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, s in enumerate(ids):
        labels[i, :len(s)] = torch.tensor(s)
    return labels


def _steps(enc, loss_of, n: int = 25) -> list[float]:
    """`n` AdamW steps on `loss_of()`; the losses."""
    opt = torch.optim.AdamW(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(n):
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_stage_one_ctc_loss_falls_and_the_encoder_round_trips(llm, tmp_path):
    from systems.asr.ctc import featurize

    enc = tiny_token_encoder(llm.tokenizer)
    audios = [_speech(t) for t in TEXTS]
    feats, mask = featurize(enc.fe, [a.samples for a in audios])
    labels = _labels(llm.tokenizer, enc)
    losses = _steps(enc, lambda: enc.ctc_loss(feats, mask, labels))
    assert losses[-1] < 0.8 * losses[0], losses
    enc.save(tmp_path / "enc")
    again = TokenCTCEncoder.load(tmp_path / "enc")
    assert again.vocab.ids == enc.vocab.ids and json.loads((tmp_path / "enc" / "bridge.json").read_text())["llm"] == "tiny"
    assert again.transcribe_ids(audios) == enc.transcribe_ids(audios)
    asr = TokenCTCASR(again, llm.tokenizer)
    assert asr.transcribe(audios) == [llm.tokenizer.decode(i, skip_special_tokens=True).strip()
                                      for i in enc.transcribe_ids(audios)]


def test_stage_one_loss_falls_on_a_batch_of_mixed_voices(llm):
    """Training speech from the default voice mix (espeak and Kokoro training voices) trains the head."""
    import random

    from bench.voices import VoiceMix
    from systems.asr.ctc import featurize

    mix, rng = VoiceMix.parse("espeak,kokoro"), random.Random(1)
    audios = [mix.speak(t, rng) for t in TEXTS]
    assert {a.origin.split(":")[0] for a in audios} == {"tts", "kokoro"}  # both engines in the batch
    enc = tiny_token_encoder(llm.tokenizer)
    feats, mask = featurize(enc.fe, [a.samples for a in audios])
    labels = _labels(llm.tokenizer, enc)
    losses = _steps(enc, lambda: enc.ctc_loss(feats, mask, labels))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("cached", [True, False])
def test_stage_one_recipe_trains_checkpoints_and_resumes(llm, tmp_path, cached):
    from systems.audiochatllama.train_bridge import BridgeTrainConfig, train

    cfg = BridgeTrainConfig(batch_size=2, steps=3, warmup=1, log_every=1, eval_every=3, ckpt_every=2, dev_size=2,
                            workers=0, noise_prob=0.0, threads=1, cached=cached, voices_per_text=1,
                            mask_states=cached)
    train(cfg, tmp_path, texts=TEXTS, tokenizer=llm.tokenizer, encoder=tiny_token_encoder(llm.tokenizer),
          progress=False)
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and "dev_wer" in log[-1]
    with open(tmp_path / "train_log.jsonl", "a") as f:  # as if killed after logging a step past its checkpoint
        f.write(json.dumps({"step": 4, "loss": 9.9}) + "\n")
    cfg.steps = 5
    out = train(cfg, tmp_path, texts=TEXTS, tokenizer=llm.tokenizer, progress=False)  # from the checkpoint
    assert out["step"] == 5
    log = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5] and log[3]["loss"] != 9.9  # each step logged once
    assert json.loads((tmp_path / "ckpt" / "train_config.json").read_text())["step"] == 5
    # the cached route encodes its clips once, in a file named by the voice mix (default espeak and Kokoro) and by
    # what is not the recipe's default signal (here no noise)
    assert (tmp_path / "states-espeak1-kokoro1-noise0-v0.pt").exists() == cached


def test_cached_states_add_only_the_voice_passes_they_lack(llm, tmp_path):
    from systems.audiochatllama.train_bridge import BridgeTrainConfig, cached_states

    enc = tiny_token_encoder(llm.tokenizer)
    one = cached_states(enc, TEXTS, BridgeTrainConfig(voices_per_text=1, voices="espeak"), tmp_path, progress=False)
    first = (tmp_path / "states-v0.pt").stat().st_mtime_ns
    two = cached_states(enc, TEXTS, BridgeTrainConfig(voices_per_text=2, voices="espeak"), tmp_path, progress=False)
    assert (tmp_path / "states-v0.pt").stat().st_mtime_ns == first  # pass 0 read back, not redone
    assert len(one) == len(TEXTS) and len(two) == 2 * len(TEXTS)
    assert [t for _, t in two] == [t for _, t in one] * 2
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(one, two))
    # pass 1 is other voices: the same texts, other speech
    assert any(a.shape != b.shape or not torch.equal(a, b) for (a, _), (b, _) in zip(two, two[len(TEXTS):]))


def test_a_pass_without_gains_or_noise_is_its_own_file_and_draws_the_same_voices(llm, tmp_path):
    import argparse

    from systems.audiochatllama.train_bridge import BridgeTrainConfig, cached_states
    from systems.training import add_dataclass_options, apply_options

    ap = argparse.ArgumentParser()
    add_dataclass_options(ap, BridgeTrainConfig)
    quiet = BridgeTrainConfig(voices_per_text=1, voices="espeak")
    apply_options(quiet, ap.parse_args(["--gain-db-range", "0,0", "--snr-range", "300,300"]))
    assert quiet.gain_db_range == (0.0, 0.0) and quiet.snr_range == (300.0, 300.0)
    for bad in ("5", "5,x", "35,5"):
        with pytest.raises(SystemExit):
            ap.parse_args(["--snr-range", bad])

    enc = tiny_token_encoder(llm.tokenizer)
    loud = cached_states(enc, TEXTS, BridgeTrainConfig(voices_per_text=1, voices="espeak"), tmp_path, progress=False)
    still = cached_states(enc, TEXTS, quiet, tmp_path, progress=False)
    assert (tmp_path / "states-v0.pt").exists() and (tmp_path / "states-gain0_0-snr300_300-v0.pt").exists()
    # the gain and the (inaudible) noise are still drawn, so the voices, and the clip lengths, are the same
    assert [s.shape for s, _ in still] == [s.shape for s, _ in loud]
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(still, loud))


def test_a_saved_token_head_trains_on_from_its_directory_on_voice_passes_it_never_heard(llm, tmp_path):
    from safetensors.torch import load_file

    from systems.audiochatllama.train_bridge import BridgeTrainConfig, train

    tiny_token_encoder(llm.tokenizer, seed=3).save(tmp_path / "head")
    before = load_file(str(tmp_path / "head" / "model.safetensors"))
    cfg = BridgeTrainConfig(init=str(tmp_path / "head"), llm="tiny", batch_size=2, steps=2, warmup=1, log_every=1,
                            eval_every=2, dev_size=2, noise_prob=0.0, threads=1, voices_per_text=1, first_pass=1)
    train(cfg, tmp_path / "run", texts=TEXTS, tokenizer=llm.tokenizer, progress=False)
    assert sorted(p.name for p in (tmp_path / "run").glob("states-*.pt")) == ["states-espeak1-kokoro1-noise0-v1.pt"]  # pass 0 unused
    again = TokenCTCEncoder.load(tmp_path / "run" / "ckpt")
    assert again.vocab.ids == TokenVocab.from_texts(llm.tokenizer, TEXTS).ids
    after = again.state_dict()
    # the saved encoder (frozen on the cached route) is under the head, and the head moved from the saved one
    enc_keys = [k for k in after if k.startswith("encoder.")]
    assert enc_keys and all(torch.equal(after[k], before[k]) for k in enc_keys)
    assert not torch.equal(after["head.weight"], before["head.weight"])
    with pytest.raises(ValueError, match="token head over tiny's tokens"):
        train(BridgeTrainConfig(init=str(tmp_path / "head"), llm="smollm2"), tmp_path / "other",
              texts=TEXTS, tokenizer=llm.tokenizer, progress=False)


def test_adapter_sits_between_encoder_and_head_and_round_trips(llm, tmp_path):
    enc = tiny_token_encoder(llm.tokenizer)
    with_adapter = TokenCTCEncoder(enc.encoder, enc.fe, enc.vocab, {"llm": "tiny", "adapter_layers": 1})
    audio = _speech("the cat sat")
    with_adapter.eval()
    with torch.no_grad():
        states, _ = with_adapter([audio])
        raw, _ = enc([audio])
    assert states.shape == raw.shape and not torch.allclose(states, raw)
    with_adapter.save(tmp_path / "a")
    again = TokenCTCEncoder.load(tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(again([audio])[0], states, atol=1e-5)


@pytest.fixture(scope="module")
def bridge_model(llm):
    from systems.audiochatllama.model import AudioChatLlama, ModelConfig

    cfg = ModelConfig(encoder="token-ctc", bridge="tokens", projector_hidden=32, train_encoder=True)
    return AudioChatLlama(cfg, tiny_token_encoder(llm.tokenizer), llm)


def test_at_step_zero_the_llm_reads_its_own_token_embeddings(bridge_model):
    m = bridge_model
    audio = _speech("the cat sat on the mat")
    with torch.no_grad():
        (emb,) = m.audio_embeds([audio])
        states, lengths = m.encoder([audio])
        post = m.encoder.head(states)[0, : int(lengths[0])].softmax(-1)
        p, _ = collapse(post, states[0, : int(lengths[0])])
    words = p[:, 1:] / p[:, 1:].sum(-1, keepdim=True)
    table = m.llm.embed(torch.tensor(m.encoder.vocab.ids))
    expected = words @ torch.cat([table.mean(0, keepdim=True), table])  # the residual starts at zero
    assert emb.shape == expected.shape and torch.allclose(emb, expected, atol=1e-5)


def test_bridge_training_steps_reduce_the_loss_and_keep_typed_turns_frozen(bridge_model):
    from systems.audiochatllama.system import AudioChatLlamaSystem
    from systems.common import to_messages
    from systems.llm import DecodeConfig

    m = bridge_model
    reqs = [Request(Turn("user", audio=_speech(r["transcript"]), transcript=r["transcript"])) for r in ROWS]
    targets = [r["ids"] for r in ROWS]
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    losses = []
    for _ in range(15):
        loss = m(reqs, targets)
        opt.zero_grad()
        loss.backward()
        assert m.encoder.head.weight.grad is not None  # through the posteriors: the token path trains too
        assert m.projector.net[-1].weight.grad is not None  # and the residual
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    typed = [Request(Turn("user", text="hello there"), (), "Answer briefly.")]
    system = AudioChatLlamaSystem(m, DecodeConfig(8))
    frozen = [t for t, _ in m.llm.generate([to_messages(r, lambda t: t.text) for r in typed], DecodeConfig(8))]
    assert [g.text for g in system.generate_batch(typed)] == frozen


def test_bridge_checkpoint_round_trips(bridge_model, llm, tmp_path):
    from safetensors.torch import load_file

    from systems.audiochatllama.model import AudioChatLlama

    bridge_model.save(tmp_path / "ck")
    state = load_file(str(tmp_path / "ck" / "trainable.safetensors"))
    assert "encoder.head.weight" in state and not any("token_table" in k or k.startswith("lm.") for k in state)
    again = AudioChatLlama.load(tmp_path / "ck", llm=llm, encoder=tiny_token_encoder(llm.tokenizer, seed=1))
    audio = _speech("a dog ran")
    with torch.no_grad():
        assert torch.allclose(again.audio_embeds([audio])[0], bridge_model.eval().audio_embeds([audio])[0], atol=1e-5)


def test_token_bridge_refuses_an_encoder_without_a_token_head(llm):
    from systems.audiochatllama.model import AudioChatLlama, ModelConfig
    from tests.e2e_tiny import tiny_model

    with pytest.raises(ValueError, match="token-CTC encoder"):
        AudioChatLlama(ModelConfig(bridge="tokens"), tiny_model().encoder, llm)


def tiny_whisper():
    """Whisper's encoder behind `encoders.WhisperEncoder`, from a tiny random config (no tokenizer: the
    token head reads the encoder only)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from systems.asr.whisper import WhisperASR
    from systems.audiochatllama.encoders import WhisperEncoder

    torch.manual_seed(0)
    asr = WhisperASR.__new__(WhisperASR)
    asr.model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)).eval()
    asr.fe, asr.identity, asr.pad_seconds = WhisperFeatureExtractor(), "tiny-whisper", 8.0
    return WhisperEncoder(asr)


def test_whisper_token_head_trains_on_frozen_states_and_round_trips(llm, tmp_path):
    from systems.audiochatllama.bridge import WhisperTokenCTCEncoder
    from systems.audiochatllama.model import AudioChatLlama, ModelConfig

    whisper = tiny_whisper()
    enc = WhisperTokenCTCEncoder.from_whisper("whisper-base", llm.tokenizer, TEXTS, "tiny", adapter_layers=1,
                                              whisper=whisper)
    assert enc.frame_ms == 40 and enc.dim == 256 and enc.base_parameters() == []
    assert not any(k.startswith("_whisper") or "encoder.layers" in k for k in enc.state_dict())  # never stored
    assert all(not p.requires_grad for p in whisper.parameters())
    audios = [_speech(t) for t in TEXTS]
    states = enc.base_states([a.samples for a in audios])  # what the cached route computes once
    # 50 Whisper frames a second, averaged in pairs
    assert [s.shape[0] for s in states] == [(int(a.seconds * 50) + 1 + 1) // 2 for a in audios]
    labels = _labels(llm.tokenizer, enc)
    padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
    lengths = torch.tensor([s.shape[0] for s in states])
    losses = _steps(enc, lambda: enc.ctc_loss_states(*enc.adapt(padded, lengths), labels))
    assert losses[-1] < 0.8 * losses[0], losses
    enc.save(tmp_path / "w")
    meta = json.loads((tmp_path / "w" / "bridge.json").read_text())
    assert meta["base"] == "whisper" and meta["whisper"] == "whisper-base" and "encoder_config" not in meta
    again = WhisperTokenCTCEncoder.load_dir(tmp_path / "w", meta, whisper=whisper)
    assert again.transcribe_ids(audios) == enc.transcribe_ids(audios)
    # under AudioChatLlama the head and adapter are tuned with the bridge, Whisper never
    model = AudioChatLlama(ModelConfig(encoder="token-ctc", bridge="tokens", projector_hidden=32), again, llm)
    assert all(not p.requires_grad for p in whisper.parameters())
    assert any(k.startswith("encoder.head") for k in model.trainable_state())
    assert not any("layers" in k and k.startswith("encoder.") and "adapter" not in k for k in model.trainable_state())


def test_whisper_token_head_recipe_takes_the_cached_route_only(llm, tmp_path):
    from systems.audiochatllama.bridge import WhisperTokenCTCEncoder
    from systems.audiochatllama.train_bridge import BridgeTrainConfig, train

    def fresh():
        return WhisperTokenCTCEncoder.from_whisper("whisper-base", llm.tokenizer, TEXTS, "tiny", whisper=tiny_whisper())

    cfg = BridgeTrainConfig(batch_size=2, steps=2, warmup=1, log_every=1, eval_every=2, ckpt_every=2, dev_size=2,
                            workers=0, noise_prob=0.0, threads=1, cached=True, voices_per_text=1)
    out = train(cfg, tmp_path / "a", texts=TEXTS, tokenizer=llm.tokenizer, encoder=fresh(), progress=False)
    assert out["step"] == 2 and "dev_wer" in out and (tmp_path / "a" / "states-espeak1-kokoro1-noise0-v0.pt").exists()
    cfg.cached = False
    with pytest.raises(ValueError, match="--cached"):
        train(cfg, tmp_path / "b", texts=TEXTS, tokenizer=llm.tokenizer, encoder=fresh(), progress=False)
