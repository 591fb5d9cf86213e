"""AudioChatLlama with a tiny encoder and a tiny LLM: splicing, text-only equivalence, mixed
modalities, a few training steps whose loss falls, checkpoints of trainable weights only, and a
2-process DDP run on gloo."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.types import Audio, Request, Turn
from systems.llm import DecodeConfig
from tests.e2e_tiny import ROWS, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _speech(text, seed=0):
    from bench.tts import Voice, synthesize

    return Audio(synthesize(text, Voice("en-us", 170, 50), cache=False).samples)


def test_text_only_conversation_is_exactly_the_frozen_llm(model):
    from systems.audiochatllama.system import AudioChatLlamaSystem
    from systems.common import to_messages

    system = AudioChatLlamaSystem(model, DecodeConfig(12))
    reqs = [Request(Turn("user", text="hello there"), (), "Answer briefly."),
            Request(Turn("user", text="and now?"), (Turn("user", text="first"), Turn("assistant", text="ok")))]
    ours = [g.text for g in system.generate_batch(reqs)]
    frozen = [t for t, _ in model.llm.generate([to_messages(r, lambda t: t.text) for r in reqs], DecodeConfig(12))]
    assert ours == frozen
    for r in reqs:
        emb = model.request_embeds([r])[0]
        ids = model.llm.prompt_ids(to_messages(r, lambda t: t.text))
        assert torch.equal(emb, model.llm.embed(ids))


def test_audio_sits_where_the_user_text_would_be(model):
    audio = _speech("the cat sat")
    spoken = Turn("user", audio=audio, transcript="the cat sat")
    req = Request(Turn("user", text="what did I say?"), (spoken, Turn("assistant", text="ok")), None)
    with torch.no_grad():
        emb = model.request_embeds([req])[0]
        (a,) = model.audio_embeds([audio])
    text_view = model.llm.prompt_ids([{"role": "user", "content": ""}, {"role": "assistant", "content": "ok"},
                                      {"role": "user", "content": "what did I say?"}])
    assert emb.shape[0] == len(text_view) + a.shape[0]
    # the audio embeddings follow the first "<|im_start|>user\n" and precede its "<|im_end|>"
    head = model.llm.tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    assert torch.allclose(emb[len(head): len(head) + a.shape[0]], a)
    assert torch.equal(emb[: len(head)], model.llm.embed(head))
    # ~80 ms per embedding: 4x subsampling (40 ms) stacked by 2, chosen from the encoder's frame period
    assert model.cfg.stack == 2 and model.encoder.frame_ms == 40
    assert a.shape[0] == pytest.approx(audio.seconds / 0.08, abs=2)


def test_mixed_conversation_generates_in_batch(model):
    from systems.audiochatllama.system import AudioChatLlamaSystem

    system = AudioChatLlamaSystem(model, DecodeConfig(6))
    spoken = lambda t: Turn("user", audio=_speech(t), transcript=t)
    reqs = [Request(spoken("the cat sat"), (Turn("user", text="typed first"), Turn("assistant", text="ok"))),
            Request(Turn("user", text="typed last"), (spoken("a dog ran"), Turn("assistant", text="yes"))),
            Request(spoken("we walked to the river"))]
    gens = system.generate_batch(reqs)
    assert len(gens) == 3 and all(g.tokens <= 6 for g in gens)
    single = [system.generate_batch([r])[0].text for r in reqs]
    assert [g.text for g in gens] == single
    assert system.score(reqs[2], "a reply").perplexity > 1


def test_training_steps_reduce_the_loss_and_leave_the_llm_frozen(model):
    frozen_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    reqs = [Request(Turn("user", audio=_speech(r["transcript"]), transcript=r["transcript"])) for r in ROWS]
    targets = [r["ids"] for r in ROWS]
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and not any(p.requires_grad for p in model.lm.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    model.train()
    losses = []
    for _ in range(10):
        loss = model(reqs, targets)
        opt.zero_grad()
        loss.backward()
        assert model.projector.net[1].weight.grad is not None  # gradients reach the projector...
        assert next(model.encoder.parameters()).grad is not None  # ...and the encoder, through the LLM
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in frozen_before.items())


def test_kl_variant_adds_a_term(model):
    from systems.audiochatllama.train import asr_targets, teacher_logits

    reqs = [Request(Turn("user", audio=_speech(r["transcript"]), transcript=r["transcript"])) for r in ROWS[:2]]
    targets = [r["ids"] for r in ROWS[:2]]
    with torch.no_grad():
        t = teacher_logits(model, ROWS[:2])
        assert [x.shape[0] for x in t] == [len(x) for x in targets]
        assert model(reqs, targets, t, 1.0) > model(reqs, targets)
        # the ASR task's target is the transcript, not the LLM's answer: no teacher, no KL term there
        asr = asr_targets(model.llm, ["a dog ran"])[0]
        mixed = teacher_logits(model, [ROWS[0], asr])
        assert mixed[1] is None and torch.equal(mixed[0], t[0])
        both = [targets[0], asr["ids"]]
        assert model(reqs, both, mixed, 1.0) > model(reqs, both)
        assert model(reqs, both, [None, None], 1.0) == model(reqs, both)


def test_checkpoint_holds_only_trainable_weights(model, tmp_path):
    from systems.audiochatllama.model import AudioChatLlama

    model.save(tmp_path / "ck")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "ck" / "trainable.safetensors"))
    assert state and not any(k.startswith("lm.") for k in state)
    again = AudioChatLlama.load(tmp_path / "ck", llm=model.llm, encoder=tiny_model().encoder)
    audio = _speech("a dog ran")
    with torch.no_grad():
        assert torch.allclose(again.audio_embeds([audio])[0], model.eval().audio_embeds([audio])[0], atol=1e-6)


def test_output_norm_puts_audio_rows_at_the_token_embedding_scale(tmp_path):
    """With out_norm, each audio embedding starts with the RMS of a token embedding, and the gain is
    a trained (saved, reloaded) weight."""
    from systems.audiochatllama.model import AudioChatLlama

    m = tiny_model(out_norm=True)
    tokens = m.llm.model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        rows = m.audio_embeds([_speech("a dog ran")])[0]
    assert torch.allclose(rows.pow(2).mean(-1).sqrt(), tokens.pow(2).mean().sqrt().expand(rows.shape[0]), rtol=1e-3)
    m.save(tmp_path / "ck")
    assert AudioChatLlama.load(tmp_path / "ck", llm=m.llm, encoder=tiny_model().encoder).projector.norm is not None


def test_responses_drop_degenerate_outputs():
    from systems.audiochatllama.data import degenerate, instruction_for

    assert degenerate([]) and degenerate([5])
    assert degenerate([1, 2, 3, 4] * 3) and not degenerate([1, 2, 3, 4, 5, 6, 7, 8])
    assert instruction_for("What is the capital of Peru?") and instruction_for("the cat sat") is None


@pytest.mark.slow
def test_two_process_gloo_training_completes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "tests" / "e2e_tiny.py"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shas = [(tmp_path / f"rank{r}.sha").read_text() for r in (0, 1)]
    assert shas[0] == shas[1]  # DDP kept the replicas identical
    assert (tmp_path / "ckpt" / "trainable.safetensors").exists()
    assert '"world": 2' in (tmp_path / "train_log.jsonl").read_text()


def test_lora_ablation_trains_only_adapters_and_saves_them(tmp_path):
    from safetensors.torch import load_file

    from systems.audiochatllama.model import AudioChatLlama
    from tests.e2e_tiny import tiny_model

    m = tiny_model()
    m.cfg.lora_r = 2
    lora = AudioChatLlama(m.cfg, m.encoder, m.llm)  # the switch: LoRA adapters on the frozen LLM
    names = [n for n, p in lora.lm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    reqs = [Request(Turn("user", audio=_speech(r["transcript"]), transcript=r["transcript"])) for r in ROWS[:2]]
    loss = lora(reqs, [r["ids"] for r in ROWS[:2]])
    loss.backward()
    assert all(p.grad is not None for n, p in lora.lm.named_parameters() if p.requires_grad)
    lora.save(tmp_path / "ck")
    saved = load_file(str(tmp_path / "ck" / "trainable.safetensors"))
    assert any("lora_" in k for k in saved) and not any("lora_" not in k and k.startswith("lm.") for k in saved)


def test_training_continues_from_an_exported_checkpoint(tmp_path):
    import json

    from safetensors.torch import load_file

    from systems.audiochatllama.train import E2ETrainConfig, main as train_main, train

    cfg = E2ETrainConfig(batch_size=2, steps=2, warmup=1, log_every=1, ckpt_every=100, noise_prob=0.0)
    train(cfg, tmp_path / "a", model=tiny_model(), rows=ROWS)
    assert train_main(["--out", str(tmp_path / "a"), "--export", str(tmp_path / "exp")]) == 0
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["step"] == 2
    exported = load_file(str(tmp_path / "exp" / "trainable.safetensors"))  # float16 on disk, half the size
    trained = load_file(str(tmp_path / "a" / "ckpt" / "trainable.safetensors"))
    assert exported.keys() == trained.keys()
    assert all(v.dtype == torch.float16 for k, v in exported.items() if trained[k].is_floating_point())
    cfg.steps = 4
    cfg.warmup = 2
    out = train(cfg, tmp_path / "b", model=tiny_model(), rows=ROWS, init_from=tmp_path / "exp")
    assert out["step"] == 4
    log = [json.loads(l) for l in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 3 and log[0]["lr"] == pytest.approx(cfg.lr / 2)  # warm-up again, from step 2
    assert json.loads((tmp_path / "b" / "ckpt" / "config.json").read_text())["start_step"] == 2
    # the LoRA ablation and the KL term, continued from a checkpoint trained without either
    cfg.model.lora_r, cfg.steps, cfg.kl_weight = 2, 3, 0.5
    assert train(cfg, tmp_path / "c", model=tiny_model(), rows=ROWS, init_from=tmp_path / "exp")["step"] == 3
    assert any("lora_" in k for k in load_file(str(tmp_path / "c" / "ckpt" / "trainable.safetensors")))
    saved = json.loads((tmp_path / "c" / "ckpt" / "config.json").read_text())
    assert saved["model"]["lora_r"] == 2 and saved["train"]["kl_weight"] == 0.5


def test_speech_made_by_workers_matches_the_in_process_stream():
    """With workers, batches come from DataLoader processes, each with its own random stream; they
    hold what the in-process stream holds (speech of the row's transcript, its target ids)."""
    from systems.audiochatllama.train import E2ETrainConfig, batches

    for workers in (0, 2):
        cfg = E2ETrainConfig(batch_size=2, noise_prob=0.0, workers=workers)
        data = batches(ROWS, cfg, "0-0-0")
        seen = [next(data) for _ in range(3)]
        for requests, targets, picked in seen:
            assert len(requests) == len(targets) == len(picked) == 2
            for req, tgt, row in zip(requests, targets, picked):
                assert isinstance(req.turn.audio, Audio) and req.turn.audio.seconds > 0.3
                assert req.turn.transcript == row["transcript"] and tgt == row["ids"]
        if workers:  # two workers with different seeds: not the same batches twice in a row
            assert [r["transcript"] for r in seen[0][2]] != [r["transcript"] for r in seen[1][2]] or \
                   not np.array_equal(seen[0][0][0].turn.audio.samples, seen[1][0][0].turn.audio.samples)


def test_asr_task_samples_have_the_transcript_as_target(model):
    """With asr_prob, a share of the samples is the ASR task through the LLM: the `asr` task's
    instruction, the transcript (then end of turn) as the target; without it the stream is unchanged."""
    import random

    from systems.audiochatllama.train import E2ETrainConfig, asr_targets, sample_batch
    from tasks.loaders import ASR_INSTRUCTION

    asr_rows = asr_targets(model.llm, ["a sentence only the asr task has"])
    assert asr_rows[0]["ids"][-1] == model.llm.eos_ids[0]
    assert model.llm.tokenizer.decode(asr_rows[0]["ids"][:-1]) == "a sentence only the asr task has"
    draw = lambda p: sample_batch(ROWS, E2ETrainConfig(batch_size=6, noise_prob=0.0, asr_prob=p),
                                  random.Random(0), np.random.default_rng(0), asr_rows)
    requests, targets, picked = draw(1.0)
    assert all(r.instruction == ASR_INSTRUCTION and r.turn.transcript == "a sentence only the asr task has"
               for r in requests) and targets == [asr_rows[0]["ids"]] * 6
    rng = random.Random(0)
    requests, targets, picked = draw(0.0)
    assert picked == [rng.choice(ROWS) for _ in range(6)]  # the same draws as before the option existed
    assert all(r.instruction != ASR_INSTRUCTION for r in requests)


def test_training_with_the_asr_task_runs_and_records_it(tmp_path):
    import json

    from systems.audiochatllama.train import E2ETrainConfig, train

    cfg = E2ETrainConfig(batch_size=2, steps=2, warmup=1, log_every=1, ckpt_every=100, noise_prob=0.0, asr_prob=0.5)
    out = train(cfg, tmp_path, model=tiny_model(), rows=ROWS, asr_texts=["the asr task speaks this"])
    assert out["step"] == 2 and math.isfinite(out["loss"])
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["train"]["asr_prob"] == 0.5


def test_lora_is_on_only_for_requests_with_speech():
    """peft injects LoRA into the LLM's modules in place, and that LLM is shared (the text topline,
    the cascade, the KL teacher): typed-only requests must still get exactly the frozen LLM, even in
    a batch mixed with spoken ones, and the spoken ones must get the adapters."""
    from systems.audiochatllama.model import AudioChatLlama
    from systems.audiochatllama.system import AudioChatLlamaSystem
    from systems.common import to_messages

    m = tiny_model()
    typed = Request(Turn("user", text="hello there"), (), "Answer briefly.")
    spoken = Request(Turn("user", audio=_speech("the cat sat"), transcript="the cat sat"))
    msgs = to_messages(typed, lambda t: t.text)
    frozen = m.llm.generate([msgs], DecodeConfig(8))
    frozen_lp = m.llm.logprobs_batch([(msgs, "a short reply")])
    m.cfg.lora_r = 2
    lora = AudioChatLlama(m.cfg, m.encoder, m.llm)
    with torch.no_grad():  # as if trained: fresh adapters are zero and would change nothing
        for n, p in lora.lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    grads = {n: p.requires_grad for n, p in lora.lm.named_parameters()}
    system = AudioChatLlamaSystem(lora, DecodeConfig(8))
    mixed = system.generate_batch([spoken, typed])
    assert mixed[1].text == frozen[0][0]
    assert mixed[0].text == system.generate_batch([spoken])[0].text
    assert m.llm.generate([msgs], DecodeConfig(8)) == frozen  # the shared LLM, as the text topline calls it
    assert system.score_batch([(typed, "a short reply")]) == frozen_lp
    with torch.no_grad():
        off = m.llm.logprobs_embeds([(lora.request_embeds([spoken])[0], "a short reply")])
    assert system.score_batch([(spoken, "a short reply")]) != off  # speech goes through the adapters
    with torch.no_grad(), lora.lora():
        assert m.llm.logprobs_embeds([(lora.request_embeds([spoken])[0], "a short reply")]) != off
    assert {n: p.requires_grad for n, p in lora.lm.named_parameters()} == grads  # training decides those


def test_responses_end_with_end_of_turn_unless_the_cap_cut_them(model):
    from systems.audiochatllama.train import response_targets

    rows = [{"transcript": "a", "instruction": None, "ids": [5, 6], "capped": False},
            {"transcript": "b", "instruction": None, "ids": [7, 8], "capped": True}]
    eos = model.llm.eos_ids[0]
    assert [r["ids"] for r in response_targets(model.llm, rows)] == [[5, 6, eos], [7, 8]]
    assert rows[0]["ids"] == [5, 6]  # the rows read from disk are left as they are


@pytest.mark.slow
def test_embedded_lora_checkpoint_hears_speech_and_leaves_typed_turns_to_the_frozen_llm():
    """The committed `audiochatllama-lora` checkpoint on the real SmolLM2: it answers the first spoken
    test question (held-out voice) right, and a typed-only conversation is the frozen LLM's."""
    from systems.audiochatllama.model import AudioChatLlama
    from systems.audiochatllama.system import CHECKPOINTS, AudioChatLlamaSystem
    from systems.common import to_messages
    from tasks.builtin import SpokenQA

    model = AudioChatLlama.load(CHECKPOINTS / "audiochatllama-lora-smollm2")
    system = AudioChatLlamaSystem(model, DecodeConfig(24))
    item = SpokenQA(split="test").items(1)[0]
    assert item.turn.transcript == "What is the capital of France?"
    spoken = Request(Turn("user", audio=item.turn.audio.load(), transcript=item.turn.transcript), (), item.instruction)
    typed = Request(Turn("user", text="My dog is called Bruno and he loves the beach."))  # LoRA would change it
    heard, read = system.generate_batch([spoken, typed])
    assert "paris" in heard.text.lower()
    assert read.text == model.llm.generate([to_messages(typed, lambda t: t.text)], DecodeConfig(24))[0][0]


def test_two_lora_checkpoints_in_one_run_keep_their_own_adapters(tmp_path, monkeypatch):
    """peft adds LoRA to the LLM's modules in place, so a second LoRA checkpoint on the run's shared LLM
    would overwrite the first one's adapters: each gets its own LLM, and building a second LoRA model on
    one ChatLLM is refused."""
    import copy
    from dataclasses import replace

    from bench.plugins import Context
    from systems.audiochatllama import system as S
    from systems.audiochatllama.encoders import CTCEncoder
    from systems.audiochatllama.model import AudioChatLlama
    from systems.llm import ChatLLM
    from tests.fakes import tiny_llm

    m = tiny_model()
    for name, seed in (("a", 1), ("b", 2)):
        lora = AudioChatLlama(replace(m.cfg, lora_r=2), copy.deepcopy(m.encoder), tiny_llm(0))
        with torch.no_grad():
            for n, p in lora.lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed))
        lora.save(tmp_path / name)
    with pytest.raises(ValueError, match="already carries"):
        AudioChatLlama(replace(m.cfg, lora_r=2), m.encoder, lora.llm)
    monkeypatch.setattr(ChatLLM, "load", classmethod(lambda cls, *a, **k: tiny_llm(0)))
    monkeypatch.setattr(CTCEncoder, "load", classmethod(lambda cls, path: copy.deepcopy(m.encoder)))
    spoken = [Request(Turn("user", audio=_speech("the cat sat"), transcript="the cat sat"))]
    alone = {k: S.build(Context().for_system({"checkpoint": str(tmp_path / k)})).generate_batch(spoken)[0].text
             for k in "ab"}
    assert alone["a"] != alone["b"]
    ctx = Context()  # one run: the two systems share its resources
    a = S.build(ctx.for_system({"checkpoint": str(tmp_path / "a")}))
    b = S.build_lora(ctx.for_system({"checkpoint": str(tmp_path / "b")}))
    got = [s.generate_batch(spoken)[0].text for s in (a, b, a)]  # (each loads on first use)
    assert got == [alone["a"], alone["b"], alone["a"]]


def test_committed_checkpoints_name_no_machine_paths():
    """A committed checkpoint's configs say where its inputs were relative to the repository (what a
    reproduction on another machine passes), never this machine's absolute paths."""
    from systems.audiochatllama.system import CHECKPOINTS

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) else []

    found = {str(p.relative_to(CHECKPOINTS)): s for p in sorted(CHECKPOINTS.glob("*/*.json"))
             for s in strings(json.loads(p.read_text())) if s.startswith(("/", "~")) or ":\\" in s}
    assert not found, found
