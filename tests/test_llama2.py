"""Llama-2-chat, as the paper's cascade names it: a tiny random LlamaForCausalLM carrying Llama-2-chat's
own chat template (`[INST]`, `<<SYS>>`, BOS from the template, no pad token), saved to a directory
and used as `llm=PATH` by `text`, `cascade` and `audiochatllama` (a few training steps whose loss
falls, then generation), so that `--llm meta-llama/Llama-2-7b-chat-hf` is a tested path."""
from __future__ import annotations

import pytest
import torch

from bench.plugins import Context, build_system
from bench.types import Audio, Request, Turn
from tests.test_hf_audio import byte_tokenizer

# meta-llama/Llama-2-7b-chat-hf's chat_template, verbatim
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
ROWS = [("the cat sat on the mat", "Cat."), ("a dog ran in the park", "Dog."),
        ("what is the capital of france", "Paris."), ("we walked to the river", "Walk.")]


@pytest.fixture(scope="module")
def llama2(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("llama2") / "tiny-llama-2-chat"
    tok = byte_tokenizer(["<unk>", "<s>", "</s>"], "<s>", "</s>", LLAMA2_CHAT_TEMPLATE, pad=None)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None,
                      tie_word_embeddings=False, initializer_range=0.2)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _speech(text):
    from bench.tts import Voice, synthesize

    return Audio(synthesize(text, Voice("en-us", 170, 50), cache=False).samples)


def _rendered(llm, msgs) -> str:
    return llm.tokenizer.decode(llm.prompt_ids(msgs))


def test_text_topline_renders_inst_and_sys_once_with_one_bos(llama2):
    system = build_system("text", Context(llm=str(llama2), max_new_tokens=8))
    llm = system.llm
    from systems.common import to_messages

    req = Request(Turn("user", transcript="what is the capital of france"), (), "Answer briefly.")
    ids = llm.prompt_ids(to_messages(req, lambda t: t.gold_text))
    bos = llm.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1  # the template's BOS, none added on top
    text = llm.tokenizer.decode(ids)
    assert text == "<s>[INST] <<SYS>>\nAnswer briefly.\n<</SYS>>\n\nwhat is the capital of france [/INST]"
    history = (Turn("user", text="my name is Ada"), Turn("assistant", text="hello Ada"))
    two = _rendered(llm, to_messages(Request(Turn("user", text="who am I?"), history), lambda t: t.gold_text))
    assert two == "<s>[INST] my name is Ada [/INST] hello Ada </s><s>[INST] who am I? [/INST]"
    assert llm.pad_id == llm.tokenizer.eos_token_id  # Llama-2 has no pad token: EOS pads
    reqs = [req, Request(Turn("user", text="hi")), Request(Turn("user", text="who am I?"), history)]
    gens = system.generate_batch(reqs)
    assert [g.text for g in gens] == [system.generate_batch([r])[0].text for r in reqs]
    assert all(0 < g.tokens <= 8 for g in gens)
    assert system.score(req, "Paris.").perplexity > 1


def test_cascade_warns_in_sys_and_answers(llama2):
    system = build_system("cascade", Context(llm=str(llama2), max_new_tokens=6), {"decoder": "greedy"})
    reqs = [Request(Turn("user", audio=_speech(t), transcript=t), (), "Answer briefly.") for t, _ in ROWS[:2]]
    gens = system.generate_batch(reqs)
    assert all(g.transcript and g.tokens <= 6 for g in gens)
    hyps, _, _ = system._transcribe(reqs)
    text = _rendered(system.llm, system._messages(reqs[0], hyps))
    assert text.startswith("<s>[INST] <<SYS>>\nThe user's messages are automatic speech recognition")
    assert "Answer briefly.\n<</SYS>>\n\n" in text and text.endswith(f"{gens[0].transcript} [/INST]")


def test_audiochatllama_trains_on_llama2_then_generates_through_the_registry(llama2, tmp_path):
    from systems.asr.ctc import CTCASR, train_tokenizer
    from systems.audiochatllama.encoders import CTCEncoder
    from systems.audiochatllama.model import AudioChatLlama, ModelConfig
    from systems.llm import ChatLLM

    torch.manual_seed(0)
    asr = CTCASR.build(train_tokenizer([t for t, _ in ROWS] * 5, 64), hidden=32, layers=1, heads=2, ffn=64,
                       kernel=7, subsampling=4, dropout=0.0)
    asr.save_pretrained(tmp_path / "asr")
    encoder = CTCEncoder.load(tmp_path / "asr")
    cfg = ModelConfig(encoder="ctc", encoder_path=str(tmp_path / "asr"), llm=str(llama2), stack=0,
                      projector_hidden=32, train_encoder=True)
    llm = ChatLLM.load(str(llama2))
    model = AudioChatLlama(cfg, encoder, llm)
    reqs = [Request(Turn("user", audio=_speech(t), transcript=t)) for t, _ in ROWS]
    targets = [llm.target_ids(r.strip()) for _, r in ROWS]
    with torch.no_grad():  # the audio sits inside [INST] ... [/INST], after the template's BOS
        emb = model.request_embeds(reqs[:1])[0]
        (a,) = model.audio_embeds([reqs[0].turn.audio])
    head = llm.tokenizer("<s>[INST] ", add_special_tokens=False)["input_ids"]
    tail = llm.tokenizer(" [/INST]", add_special_tokens=False)["input_ids"]
    assert emb.shape[0] == len(head) + a.shape[0] + len(tail)
    assert torch.equal(emb[: len(head)], llm.embed(head)) and torch.allclose(emb[len(head): len(head) + a.shape[0]], a)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-3)
    model.train()
    losses = []
    for _ in range(20):
        loss = model(reqs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    model.save(tmp_path / "ck")
    system = build_system("audiochatllama", Context(llm=str(llama2), max_new_tokens=6), {"checkpoint": str(tmp_path / "ck")})
    gens = system.generate_batch(reqs)
    assert all(g.tokens <= 6 for g in gens)
    assert [g.text for g in gens] == [system.generate_batch([r])[0].text for r in reqs]
    with torch.no_grad():  # the registry's model is the trained one
        again = system.model.audio_embeds([reqs[0].turn.audio])[0]
        assert torch.allclose(again, model.eval().audio_embeds([reqs[0].turn.audio])[0], atol=1e-5)


def test_train_e2e_takes_llm_and_refuses_another_llms_targets_or_head(llama2, tmp_path):
    """The CLI route to AudioChatLlama on another LLM: `data responses --llm`, then `train e2e --llm`.
    Another LLM's answers, or a token head over another LLM's tokens, are refused before a step."""
    import json

    from systems.asr.ctc import CTCASR, train_tokenizer
    from systems.audiochatllama.data import main as responses_main
    from systems.audiochatllama.train import main as train_main

    torch.manual_seed(0)
    asr = CTCASR.build(train_tokenizer([t for t, _ in ROWS] * 5, 64), hidden=32, layers=1, heads=2, ffn=64,
                       kernel=7, subsampling=4, dropout=0.0)
    asr.save_pretrained(tmp_path / "asr")
    resp = tmp_path / "responses.jsonl"
    assert responses_main(["--llm", str(llama2), "--limit", "6", "--max-new-tokens", "6", "--out", str(resp)]) == 0
    header = json.loads(resp.read_text().splitlines()[0])
    assert header["llm"].startswith("tiny-llama-2-chat@")
    common = ["--preset", "ctc", "--encoder-path", str(tmp_path / "asr"), "--batch-size", "2", "--steps", "2",
              "--warmup", "1", "--log-every", "1", "--noise-prob", "0", "--llm", str(llama2)]
    assert train_main([*common, "--responses", str(resp), "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "ckpt" / "config.json").read_text())
    assert saved["model"]["llm"] == str(llama2) and saved["llm_identity"].split(":")[0] == header["llm"].split(":")[0]
    assert saved["step"] == 2

    other = tmp_path / "smollm2-responses.jsonl"  # what `data responses` wrote for the default LLM
    other.write_text("\n".join([json.dumps({**header, "llm": "smollm2@fc8ed46c15c353af:float32"}),
                                *resp.read_text().splitlines()[1:]]) + "\n")
    with pytest.raises(SystemExit, match=r"answers of smollm2@fc8ed46c15c353af.*data responses --llm"):
        train_main([*common, "--responses", str(other), "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused" / "ckpt").exists()

    head = tmp_path / "head"  # a `train bridge` head over SmolLM2's tokens
    head.mkdir()
    (head / "bridge.json").write_text(json.dumps({"llm": "smollm2"}))
    with pytest.raises(SystemExit, match=r"tokens of 'smollm2'.*train bridge --llm"):
        train_main(["--preset", "tokens", "--encoder-path", str(head), "--llm", str(llama2),
                    "--responses", str(resp), "--out", str(tmp_path / "refused2")])
