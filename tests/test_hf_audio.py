"""The `hf-audio` family on tiny random-config audio LLMs built offline: each class's config, a
byte-level tokenizer made here, the class's own feature extractor from its defaults and a chat
template, saved to a directory and built through the registry by path. Batched greedy output equals
one-at-a-time, the fingerprint follows weights / processor / decoding, `+text` answers without
audio, and `+asr=SYSTEM` reads another system's transcript."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.plugins import Context, build_system, systems
from bench.types import Audio, Generation, Request, System, Turn

# Qwen2-Audio-7B-Instruct's template: audio blocks render as the audio token between its markers
QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Granite's style: string contents only, the processor's audio token typed into the user's text
GRANITE_TEMPLATE = (
    "{%- for message in messages %}{{ '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content']"
    " + '<|end_of_text|>\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|start_of_role|>assistant<|end_of_role|>' }}"
    "{%- endif %}")


def byte_tokenizer(specials: list[str], bos: str, eos: str, template: str, pad: str | None = "eos"):
    """A byte-level BPE tokenizer (256 byte symbols, no merges) with `specials` and a chat template;
    `pad`: "eos" (pad with EOS) or None (no pad token, as Llama-2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for sp in specials:
        vocab[sp] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos,
                                  **({"pad_token": eos} if pad == "eos" else {}),
                                  unk_token="<unk>" if "<unk>" in specials else None,
                                  additional_special_tokens=[s for s in specials if s not in (bos, eos)])
    tok.chat_template = template
    return tok


def _save(model, processor, out, eos_id):
    model.generation_config.eos_token_id = eos_id
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def make_qwen2_audio(out, seed=0):
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    tok = byte_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                          "<|audio_eos|>"], "<|im_start|>", "<|im_end|>", QWEN2_AUDIO_TEMPLATE)
    fe = WhisperFeatureExtractor(feature_size=128)  # the class's defaults, at Qwen2-Audio's 128 mel bins
    processor = Qwen2AudioProcessor(fe, tok, chat_template=QWEN2_AUDIO_TEMPLATE)
    torch.manual_seed(seed)
    cfg = Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, initializer_range=0.2),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"), pad_token_id=tok.pad_token_id)
    return _save(Qwen2AudioForConditionalGeneration(cfg), processor, out, tok.eos_token_id)


def make_granite_speech(out, seed=0):
    from transformers import (GraniteSpeechConfig, GraniteSpeechForConditionalGeneration)

    from systems.hf_audio import _granite_processor

    tok = byte_tokenizer(["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>"],
                         "<|end_of_text|>", "<|end_of_text|>", GRANITE_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "GraniteSpeechFeatureExtractor", "processor_class": "GraniteSpeechProcessor"}))
    processor = _granite_processor(out, False)  # the class's feature extractor from its defaults
    torch.manual_seed(seed)
    cfg = GraniteSpeechConfig(
        encoder_config=dict(input_dim=160, num_layers=1, hidden_dim=32, feedforward_mult=2, num_heads=2,
                            dim_head=16, output_dim=8, context_size=50, max_pos_emb=64, dropout=0.0,
                            conv_kernel_size=5),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                              cross_attention_frequency=1),
        text_config=dict(model_type="granite", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, initializer_range=0.2),
        audio_token_index=tok.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=False)
    model = GraniteSpeechForConditionalGeneration(cfg)
    return _save(model, processor, out, tok.eos_token_id)


MAKERS = {"qwen2_audio": make_qwen2_audio, "granite_speech": make_granite_speech}


def _tone(seconds: float, hz: float) -> Audio:
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(int(hz))
    return Audio((0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))


def _requests():
    spoken = lambda s, hz, text: Turn("user", audio=_tone(s, hz), transcript=text)
    return [Request(spoken(1.0, 220, "what is the capital of france"), (), "Answer briefly."),
            Request(spoken(1.6, 440, "name a colour")),
            Request(Turn("user", text="typed question"), (spoken(0.8, 330, "first"), Turn("assistant", text="ok"))),
            Request(spoken(1.2, 550, "tell me a story"))]


@pytest.fixture(scope="module", params=sorted(MAKERS))
def model_dir(request, tmp_path_factory):
    return MAKERS[request.param](tmp_path_factory.mktemp(request.param) / "model")


def _build(name: str, **options):
    return build_system(name, Context(max_new_tokens=options.pop("max_new_tokens", 8), **options))


def test_family_names_resolve_and_errors_say_what_to_write():
    from bench.plugins import family_arg
    from bench.registry import RegistryError

    assert systems().target("hf-audio:/m+text") == "systems.hf_audio:build[/m+text]"
    assert family_arg("hf-audio") and family_arg("text") is None
    with pytest.raises(ValueError, match="hf-audio:ARG"):
        _build("hf-audio")
    with pytest.raises(RegistryError, match="takes no ':ARG'"):
        systems().target("text:foo")
    with pytest.raises(RegistryError, match="Did you mean 'hf-audio'"):
        systems().target("hf-audo:x")
    from systems.hf_audio import Spec

    assert Spec.parse("org/m+asr=whisper") == Spec("org/m", "asr", "cascade-whisper")
    assert Spec.parse("org/m+text") == Spec("org/m", "text")
    with pytest.raises(ValueError, match="unknown suffix"):
        Spec.parse("org/m+txt")


def test_batched_greedy_equals_one_at_a_time(model_dir):
    system = _build(f"hf-audio:{model_dir}")
    assert system.name == f"hf-audio:{model_dir}"
    reqs = _requests()
    batched = system.generate_batch(reqs)
    single = [system.generate_batch([r])[0] for r in reqs]
    assert [(g.text, g.tokens) for g in batched] == [(g.text, g.tokens) for g in single]
    assert all(0 < g.tokens <= 8 and g.transcript is None and g.seconds["llm"] >= 0 for g in batched)
    ids = [system.llm.inputs([system._conversation(r, {})])["input_ids"][0].tolist() for r in reqs]
    assert len({tuple(i) for i in ids}) == len(ids)  # each request its own prompt
    audio_id = system.llm.model.config.audio_token_index
    assert sum(i.count(audio_id) for i in ids[:1]) > 5  # the audio sits in the prompt as many tokens
    assert len({g.text for g in batched}) > 1, "the tiny model should not answer every request alike"


def test_text_topline_reads_the_gold_transcript_without_audio(model_dir):
    system = _build(f"hf-audio:{model_dir}+text")
    reqs = _requests()
    convs = [system._conversation(r, {}) for r in reqs]
    assert all(isinstance(m["content"], str) for c in convs for m in c)
    x = system.llm.inputs(convs[:1])
    assert system.llm.model.config.audio_token_index not in x["input_ids"][0].tolist()
    assert "what is the capital of france" in system.llm.processor.tokenizer.decode(x["input_ids"][0])
    gens = system.generate_batch(reqs)
    assert [g.transcript for g in gens] == ["what is the capital of france", "name a colour", None, "tell me a story"]
    assert [g.text for g in gens] == [system.generate_batch([r])[0].text for r in reqs]
    # the topline's answer equals the audio row's answer to the same typed conversation
    typed = Request(Turn("user", text="hello there"))
    assert _build(f"hf-audio:{model_dir}").generate(typed.turn).text == system.generate(typed.turn).text
    assert system.score(reqs[0], "paris").perplexity > 1


class ReadsAloud(System):
    """A fake ASR system: its transcript is the gold one in capitals (what the +asr row must read)."""

    name = "reads-aloud"

    def fingerprint(self) -> str:
        return "reads-aloud-1"

    def generate_batch(self, requests):
        assert all(r.transcript_only for r in requests)
        return [Generation(text="", transcript=r.turn.transcript.upper()) for r in requests]


def build_reads_aloud(ctx):
    return ReadsAloud()


def test_asr_cascade_reads_another_systems_transcript(model_dir):
    systems().register("reads-aloud", "tests.test_hf_audio:build_reads_aloud")  # undone by conftest
    system = _build(f"hf-audio:{model_dir}+asr=reads-aloud")
    reqs = _requests()
    gens = system.generate_batch(reqs)
    assert [g.transcript for g in gens] == ["WHAT IS THE CAPITAL OF FRANCE", "NAME A COLOUR", None, "TELL ME A STORY"]
    text = system.llm.processor.tokenizer.decode(system.llm.inputs([system._conversation(reqs[2], system._transcribe(reqs[2:3])[0])])["input_ids"][0])
    assert "FIRST" in text and "typed question" in text and "speech recognition" in text
    assert [g.text for g in gens] == [system.generate_batch([r])[0].text for r in reqs]
    asr_only = system.generate_batch([Request(reqs[1].turn, transcript_only=True)])[0]
    assert asr_only.transcript == "NAME A COLOUR" and asr_only.tokens == 0
    systems().register("silent", "tests.fakes:build_echo")
    with pytest.raises(ValueError, match="gives no transcript"):
        _build(f"hf-audio:{model_dir}+asr=silent").generate_batch(reqs[:1])


def test_fingerprint_follows_weights_processor_decoding_and_mode(model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    fp = lambda name, **kw: _build(name, **kw).fingerprint()
    base = fp(f"hf-audio:{model_dir}")
    assert base == fp(f"hf-audio:{model_dir}")
    assert base != fp(f"hf-audio:{model_dir}", max_new_tokens=9)
    assert len({base, fp(f"hf-audio:{model_dir}+text"), fp(f"hf-audio:{model_dir}+asr=fake-asr-a"),
                fp(f"hf-audio:{model_dir}+asr=fake-asr-b")}) == 4
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    copy_fp = fp(f"hf-audio:{copy}")
    assert copy_fp != base  # the directory's name is part of the identity; the files decide the rest
    # the processor: one feature-extractor setting changed (where this class's processor keeps it)
    file = copy / "preprocessor_config.json"
    if not file.exists():
        file = copy / "processor_config.json"
    pre = json.loads(file.read_text())
    (pre.get("feature_extractor") or pre)["padding_value"] = 0.5
    file.write_text(json.dumps(pre))
    assert _build(f"hf-audio:{copy}").llm.processor is not None  # still a valid processor
    after_processor = fp(f"hf-audio:{copy}")
    assert after_processor != copy_fp
    # the weights: one tensor nudged
    (weights,) = copy.glob("*.safetensors")
    state = load_file(str(weights))
    k = next(iter(state))
    state[k] = state[k] + 1e-3
    save_file(state, str(weights), metadata={"format": "pt"})
    assert fp(f"hf-audio:{copy}") not in (after_processor, copy_fp)


@pytest.fixture(autouse=True)
def _fake_asr_systems():
    systems().register("fake-asr-a", "tests.test_hf_audio:build_reads_aloud")
    systems().register("fake-asr-b", "tests.test_hf_audio:build_other_reader")


class OtherReader(ReadsAloud):
    def fingerprint(self) -> str:
        return "other-reader-1"


def build_other_reader(ctx):
    return OtherReader()


def test_safetensors_only_and_no_remote_code_unless_asked(model_dir, tmp_path, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForMultimodalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForMultimodalLM, "from_pretrained", spy)
    _build(f"hf-audio:{model_dir}").llm.model
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    with pytest.raises(FileNotFoundError, match="no such directory"):
        _build(f"hf-audio:{tmp_path}/absent")


def test_granite_mel_matches_a_reference_spectrogram():
    """GraniteMel (Granite's features without torchaudio) against transformers' numpy spectrogram
    with torchaudio MelSpectrogram's defaults: hann window of 400 centred in 512, reflect padding,
    power 2, HTK mel filters without norm."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    from systems.hf_audio import GraniteMel

    x = _tone(0.7, 300).samples
    ours = GraniteMel()(torch.from_numpy(x)[None])[0].numpy()
    window = np.pad(window_function(400, "hann", periodic=True), (56, 56))
    ref = spectrogram(x, window, frame_length=512, hop_length=160, fft_length=512, power=2.0, center=True,
                      pad_mode="reflect", mel_filters=mel_filter_bank(257, 80, 0.0, 8000.0, 16000, norm=None,
                                                                      mel_scale="htk"))
    assert ours.shape == ref.shape == (80, 1 + x.size // 160)
    assert np.allclose(ours, ref, rtol=1e-3, atol=1e-6)
