"""Word n-gram LM (estimation, ARPA round trip, normalisation) and CTC prefix beam search with
shallow fusion: known answers on hand-made log-probability matrices, and the ASR's beam path."""
import gzip
import json
import math

import numpy as np
import pytest

from systems.asr.lm import BOS, EOS, BeamConfig, NgramLM, build_arpa, ctc_beam_search, ctc_pieces

SENTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ran"]


def _lm(tmp_path, order=3, **kw) -> NgramLM:
    p = tmp_path / "lm.arpa.gz"
    with gzip.open(p, "wt") as f:
        f.write(build_arpa(SENTS, order=order, **kw))
    return NgramLM.load(p)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_context_is_a_distribution(tmp_path, order):
    lm = _lm(tmp_path, order, extra_unigrams={"the": 10.0, "house": 1.0, "mouse": 0.5})
    words = sorted(lm.vocab | {EOS})
    assert {"house", "mouse", "cat"} <= lm.vocab
    for ctx in [(BOS,), (BOS, "the"), ("the", "cat"), ("on", "the"), ("never", "seen"), ()]:
        assert sum(10 ** lm.score(ctx, w) for w in words) == pytest.approx(1.0, abs=1e-5), ctx


def test_known_context_beats_backoff_and_oov_is_unk(tmp_path):
    lm = _lm(tmp_path)
    assert lm.score(("on", "the"), "mat") > lm.score(("on", "the"), "ran")
    assert lm.score((BOS,), "zebra") == lm.unk
    assert lm.sentence_log10("the cat sat on the mat".split()) > lm.sentence_log10("mat the on sat cat the".split())


def test_reads_a_space_separated_arpa(tmp_path):
    """ARPA files from other tools (KenLM writes tabs, others spaces) load the same way."""
    text = build_arpa(SENTS, order=2).replace("\t", " ")
    (tmp_path / "x.arpa").write_text(text)
    a, b = NgramLM.load(tmp_path / "x.arpa"), _lm(tmp_path, order=2)
    assert a.table == b.table
    (tmp_path / "bad.arpa").write_text("hello\n")
    with pytest.raises(ValueError, match="ARPA"):
        NgramLM.load(tmp_path / "bad.arpa")


def _frames(*rows, vocab="_ acdkt"):
    """(T, V) log-probabilities from per-frame {char: prob} (the rest shared by the other tokens)."""
    out = np.full((len(rows), len(vocab)), 1e-6)
    for t, r in enumerate(rows):
        for ch, p in r.items():
            out[t, vocab.index(ch)] = p
    return np.log(out / out.sum(1, keepdims=True))


PIECES = ["", " ", "a", "c", "d", "k", "t"]


def test_prefix_search_sums_alignments_that_greedy_cannot():
    """Two frames of blank .6 / a .4: the best path is blank-blank (""), but "a" has probability
    .64 summed over its three alignments; prefix search finds it."""
    lp = _frames({"_": 0.6, "a": 0.4}, {"_": 0.6, "a": 0.4})
    assert ctc_beam_search(lp, PIECES, 0, None, BeamConfig(beam=4)) == "a"


def test_the_lm_picks_the_word_it_knows(tmp_path):
    lm = _lm(tmp_path)
    lp = _frames({"k": 0.55, "c": 0.45}, {"_": 1.0}, {"a": 1.0}, {"t": 1.0})
    assert ctc_beam_search(lp, PIECES, 0, None, BeamConfig()) == "kat"
    assert ctc_beam_search(lp, PIECES, 0, lm, BeamConfig(alpha=0.5, beta=0.0)) == "cat"
    nbest = ctc_beam_search(lp, PIECES, 0, lm, BeamConfig(alpha=0.5, beta=0.0), nbest=3)
    assert [t for t, _ in nbest][:2] == ["cat", "kat"] and nbest[0][1] > nbest[1][1]
    assert len({t for t, _ in nbest}) == len(nbest)  # distinct transcripts, best first
    # repeated letters need a blank between them: "dd" never collapses into one "d"
    lp2 = _frames({"d": 1.0}, {"_": 1.0}, {"d": 1.0}, {" ": 1.0}, {"a": 1.0})
    assert ctc_beam_search(lp2, PIECES, 0, None, BeamConfig()) == "dd a"


def test_pieces_from_a_metaspace_tokenizer():
    from systems.asr.ctc import train_tokenizer

    tok = train_tokenizer(SENTS * 3, 40)
    pieces = ctc_pieces(tok)
    assert pieces[tok.pad_token_id] == ""
    assert " " in pieces and any(p.startswith(" ") and len(p) > 1 for p in pieces)


def test_asr_beam_path_and_identity(tmp_path):
    """A saved model with decoding.json and an LM decodes by beam search, and the decoding files
    change the identity (so cached transcripts of another decoder are never reused)."""
    import torch

    from bench.tts import Voice, synthesize
    from systems.asr import lm as L
    from systems.asr.ctc import CTCASR, train_tokenizer

    torch.manual_seed(0)
    asr = CTCASR.build(train_tokenizer(SENTS * 3, 30), 32, 1, 2, 64, 7, 4, 0.0)
    d = tmp_path / "m"
    asr.save_pretrained(d)
    (d / "train_config.json").write_text(json.dumps({"config": {}, "step": 0}))
    greedy = CTCASR.from_pretrained(d)
    with pytest.raises(FileNotFoundError, match="train lm"):
        CTCASR.from_pretrained(d, decoder="beam")
    with gzip.open(d / "lm.arpa.gz", "wt") as f:
        f.write(build_arpa(SENTS))
    (d / "decoding.json").write_text(json.dumps({"lm": "lm.arpa.gz", **BeamConfig(beam=4).as_dict()}))
    beam = CTCASR.from_pretrained(d)
    assert beam.lm is not None and beam.beam.beam == 4 and beam.identity != greedy.identity
    assert CTCASR.from_pretrained(d, decoder="greedy").identity not in (beam.identity, greedy.identity)
    audio = [synthesize("the cat ran", Voice("en-us", 170, 50), cache=False)]
    logps = beam.log_probs(audio)
    assert logps[0].shape[1] == len(asr.tokenizer) and np.allclose(np.exp(logps[0]).sum(1), 1, atol=1e-4)
    assert beam.transcribe(audio) == beam.decode_beam(logps, beam.lm, beam.beam)
    # on peaky outputs (what a trained CTC model emits), prefix search without an LM is greedy decoding
    peaky = np.log(np.eye(logps[0].shape[1])[logps[0].argmax(1)] * 0.98 + 0.02 / logps[0].shape[1])
    assert L.ctc_beam_search(peaky, L.ctc_pieces(asr.tokenizer), asr.blank, None, BeamConfig(beam=1)) \
        == greedy.decode_greedy([peaky])[0]


def test_word_frequency_list_reader(tmp_path, monkeypatch):
    """wordfreq's centibel buckets: bucket i holds words of frequency 10^(-i/100); non-ASR-alphabet
    entries are skipped; `top` caps the list."""
    import msgpack

    from bench import assets
    from systems.asr import lm as L

    data = [{"format": "cB", "version": 1}, ["the"], [], ["of", "3d", "x-ray"], ["don't", "cat"]]
    with gzip.open(tmp_path / "large_en.msgpack.gz", "wb") as f:
        msgpack.dump(data, f)
    monkeypatch.setattr(assets, "resolve", lambda asset, root=None: tmp_path)
    freqs = L.english_word_frequencies(top=3)
    assert list(freqs) == ["the", "of", "don't"]
    assert freqs["of"] == pytest.approx(10 ** -0.02) and freqs["the"] == 1.0
    assert math.isclose(sum(L.english_word_frequencies(top=10).values()), 1 + 10 ** -0.02 + 2 * 10 ** -0.03)


def test_llm_rescoring_of_the_n_best(tmp_path):
    """The second pass picks by beam score + weight x LLM log-probability; scores do not depend on
    batching; a directory whose decoding.json names a rescoring LLM uses it under "auto" (its
    identity names the LLM) and not under "beam"."""
    import torch

    from bench.tts import Voice, synthesize
    from systems.asr.ctc import CTCASR, train_tokenizer
    from systems.asr.rescore import LLMRescorer, RescoreConfig
    from tests.fakes import tiny_llm

    nbest = [[("a b", -1.0), ("a c", -1.5)]]
    assert LLMRescorer.pick(nbest, {"a b": -10.0, "a c": -5.0}, 0.0) == ["a b"]
    assert LLMRescorer.pick(nbest, {"a b": -10.0, "a c": -5.0}, 0.2) == ["a c"]  # -3.0 < -2.5

    llm = tiny_llm()
    rescorer = LLMRescorer(RescoreConfig(llm="unused"), llm=llm)
    texts = ["the cat", "the cat sat on the mat", "", "the cat sat on a mat", "the cat sat on the hat", "a dog"]
    groups = [texts[:3], texts[3:5], texts[5:], texts[:2]]  # N-best lists: texts that open alike (one twice)
    together, alone = rescorer.log_probs(groups, batch=3), {t: rescorer.log_probs([[t]])[t] for t in texts}
    assert set(together) == set(texts) and all(v < 0 for v in together.values())
    assert together == pytest.approx(alone, abs=1e-4)  # a shared prefix run once scores as the text alone
    assert rescorer.log_probs([texts], batch=64) == pytest.approx(alone, abs=1e-4)  # one group, one chunk
    assert rescorer.log_probs(groups, batch=1, width=3) == pytest.approx(alone, abs=1e-4)  # many rows, one a forward
    rescorer.per_trie = 1  # one utterance a trie: the tries of a long batch score alike
    assert rescorer.log_probs(groups, batch=3) == pytest.approx(alone, abs=1e-4)
    # the cached template prefix gives what scoring the whole user turn from scratch gives
    text = llm.tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False)
    prefix = llm.embed(llm.tokenizer(text[: text.index("\x00")], add_special_tokens=False)["input_ids"])
    full = {t: -r.nll for t, r in zip(texts, llm.logprobs_embeds([(prefix, t or " ") for t in texts]))}
    assert together == pytest.approx(full, abs=1e-3)

    torch.manual_seed(0)
    d, llm_dir = tmp_path / "asr", tmp_path / "tiny-llm"
    CTCASR.build(train_tokenizer(SENTS * 3, 30), 32, 1, 2, 64, 7, 4, 0.0).save_pretrained(d)
    llm.model.save_pretrained(llm_dir)
    llm.tokenizer.save_pretrained(llm_dir)
    with gzip.open(d / "lm.arpa.gz", "wt") as f:
        f.write(build_arpa(SENTS))
    conf = {"lm": "lm.arpa.gz", **BeamConfig(beam=4).as_dict()}
    (d / "decoding.json").write_text(json.dumps(conf))
    plain = CTCASR.from_pretrained(d)
    (d / "decoding.json").write_text(json.dumps({**conf, "rescore": RescoreConfig(llm=str(llm_dir), nbest=4).as_dict()}))
    auto, beam = CTCASR.from_pretrained(d), CTCASR.from_pretrained(d, decoder="beam")
    assert auto.rescorer is not None and auto.rescorer.cfg.nbest == 4 and beam.rescorer is None
    from systems.llm import ChatLLM  # a loaded LLM of the same weights is shared, another is not

    same, other = ChatLLM.load(str(llm_dir)), llm
    assert CTCASR.from_pretrained(d, llm=same).rescorer.llm is same
    assert CTCASR.from_pretrained(d, llm=other).rescorer.llm is not other
    assert "tiny-llm@" in auto.identity and beam.identity.endswith(";no-rescore")
    assert len({plain.identity, auto.identity, beam.identity}) == 3
    audio = [synthesize(s, Voice("en-us", 170, 50), cache=False) for s in ("the cat ran", "a dog sat")]
    logps = auto.log_probs(audio)
    lists = [ctc_beam_search(lp, ctc_pieces(auto.tokenizer), auto.blank, auto.lm, auto.beam, nbest=4) for lp in logps]
    lm_logp = auto.rescorer.log_probs([[t for t, _ in n] for n in lists])
    assert auto.transcribe(audio) == LLMRescorer.pick(lists, lm_logp, auto.rescorer.cfg.weight)
    assert beam.transcribe(audio) == [n[0][0] for n in lists]
