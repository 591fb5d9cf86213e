"""Training recipe for AudioChatLlama by modal invariance: `audiochat-bench train e2e [...]`.

Top to bottom: config → responses (the frozen LLM's answers to typed transcripts, from
`data responses`) → model (encoder from the trained CTC ASR or Whisper, projector, frozen LLM,
optional LoRA) → a stream of synthetic speech of those transcripts in training voices → AdamW →
one step's loss: cross-entropy on the response tokens given the audio (+ optional KL to the text-prompted
distributions), handed to the one training loop (`systems/training.py`: logs, checkpoints of the
trainable weights + optimiser + config, resume).

Multi-process: run under `torchrun --nproc-per-node N -m systems.audiochatllama.train ...`; ranks
train on different samples, gradients are averaged by DDP (gloo on CPU, nccl on GPUs), rank 0 logs
and saves.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from systems.augment import AUGMENT_HELP, Levers, gain_and_noise
from systems.audiochatllama.model import AudioChatLlama, ModelConfig
from systems.training import (Origin, Run, add_dataclass_options, apply_options, config_from_dict, copy_record, fit,
                              halve_safetensors, step_rngs)


@dataclass
class E2ETrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    responses: str = "results/train/responses-smollm2.jsonl"
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    warmup: int = 100
    steps: int = 5000
    weight_decay: float = 1e-2
    grad_clip: float = 1.0  # the gradient norm's ceiling (0: none)
    kl_weight: float = 0.0  # > 0: the Ultravox variant (KL to the text-prompted distributions)
    # Share of samples that are the ASR task through the frozen LLM: under the `asr` task's instruction,
    # the target is the transcript itself (then end of turn), drawn from all training transcripts, not
    # only those with a response. Every target token then depends on what was said, where a response's
    # later tokens can be guessed from its first ones. 0: off (the plain modal-invariance recipe).
    asr_prob: float = 0.0
    noise_prob: float = 0.3
    snr_range: tuple = (10.0, 40.0)
    bf16: bool = False  # autocast to bfloat16 (on CPU: fast where the CPU has AMX)
    device: str = "cpu"  # "cuda" where a GPU is lent (speech is still synthesised on the CPU)
    seed: int = 0
    threads: int = 1
    workers: int = 0  # processes synthesising speech ahead of the step (0: the training process does, in turn)
    log_every: int = 10
    ckpt_every: int = 50
    # the voice engines the clips come from, with weights (`bench.voices.VoiceMix`: espeak,kokoro or
    # espeak=3,kokoro=1): training voices only, never a test or dev voice, never the evaluation-only voice
    voices: str = "espeak,kokoro"
    augment: str = field(default="", metadata={"help": AUGMENT_HELP})


# options a resumed run takes from the command line (the rest come from the run's saved config)
RUN_OPTIONS = ("steps", "threads", "workers", "bf16", "device")
# ... and those a run continued with --init-from takes too (its new schedule and task mix)
NEW_RUN_OPTIONS = ("warmup", "lr", "encoder_lr", "asr_prob", "kl_weight", "voices")
OLD_DEFAULTS = {"voices": "espeak"}  # what a run saved before an option existed ran with


def _dist():
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def sample_batch(rows, cfg: E2ETrainConfig, rng: random.Random, nprng: np.random.Generator, asr_rows=(),
                 lever_rng: random.Random | None = None):
    """Requests (speech of the transcripts in training voices, with the instruction) and targets; with
    `cfg.asr_prob`, that share of the samples come from `asr_rows` (see `asr_targets`). `lever_rng`: the
    augmentation levers' own random stream (`systems.augment`; default: one seeded from `cfg.seed`)."""
    from bench.types import Audio, Request, Turn
    from bench.voices import VoiceMix

    if cfg.asr_prob:
        picked = [rng.choice(asr_rows if rng.random() < cfg.asr_prob else rows) for _ in range(cfg.batch_size)]
    else:  # no extra draw: the random stream of runs without the ASR task is unchanged
        picked = [rng.choice(rows) for _ in range(cfg.batch_size)]
    requests, mix, levers = [], VoiceMix.parse(cfg.voices), Levers.parse(cfg.augment)
    lever_rng = lever_rng or random.Random(f"{cfg.seed}-augment")
    for r in picked:
        audio = Audio(levers(gain_and_noise(mix.speak(r["transcript"], rng).samples, cfg, rng, nprng), lever_rng))
        requests.append(Request(Turn("user", audio=audio, transcript=r["transcript"]), (), r["instruction"]))
    return requests, [r["ids"] for r in picked], picked


class SpeechBatches(torch.utils.data.IterableDataset):
    """Endless `sample_batch` results, the first for step `first_step`, each a function of its step
    (`systems.training.step_rngs`), whichever process makes it."""

    def __init__(self, rows, cfg: E2ETrainConfig, seed: str, asr_rows=(), first_step: int = 0):
        self.rows, self.cfg, self.seed, self.asr_rows, self.first_step = rows, cfg, seed, asr_rows, first_step

    def __iter__(self):
        for rng, nprng, lever_rng in step_rngs(self.seed, self.first_step):
            yield sample_batch(self.rows, self.cfg, rng, nprng, self.asr_rows, lever_rng)


def _as_is(batch):
    return batch


def asr_targets(llm, texts) -> list[dict]:
    """Rows of the ASR task through the LLM: the `asr` task's instruction, the transcript as the
    target (its tokens, then the end-of-turn token, as the LLM would write it)."""
    from corpus import ASR_INSTRUCTION

    return [{"transcript": t, "instruction": ASR_INSTRUCTION, "ids": llm.target_ids(t), "asr": True} for t in texts]


def response_targets(llm, rows) -> list[dict]:
    """Response rows with the end-of-turn token after each response the length cap did not cut, so the
    model learns to stop where the typed-prompted LLM stopped (`response-ppl` scores that token too)."""
    return [{**r, "ids": list(r["ids"]) + ([] if r.get("capped") else [llm.eos_ids[0]])} for r in rows]


def batches(rows, cfg: E2ETrainConfig, seed: str, asr_rows=(), first_step: int = 0):
    """An endless iterator of (requests, targets, picked) from step `first_step` on: made in turn by the
    caller with no workers, else by `cfg.workers` processes ahead of the step (the same batches)."""
    data = SpeechBatches(rows, cfg, seed, asr_rows, first_step)
    if cfg.workers == 0:
        return iter(data)
    return iter(torch.utils.data.DataLoader(data, batch_size=None, collate_fn=_as_is, num_workers=cfg.workers,
                                            prefetch_factor=4))


def teacher_logits(model: AudioChatLlama, picked) -> list[torch.Tensor | None]:
    """The text-prompted LLM's logits at the response positions (the KL target); None for the ASR
    task's samples, whose target is the transcript, not what the LLM would answer to it."""
    llm, out = model.llm, []
    with torch.no_grad():
        for r in picked:
            if r.get("asr"):
                out.append(None)
                continue
            msgs = ([{"role": "system", "content": r["instruction"]}] if r["instruction"] else []) + \
                   [{"role": "user", "content": r["transcript"]}]
            p = llm.prompt_ids(msgs)
            ids = torch.tensor([p + r["ids"]], device=llm.device)
            logits = model.lm(input_ids=ids).logits[0]
            out.append(logits[len(p) - 1: len(p) - 1 + len(r["ids"])])
    return out


def check_responses_llm(header: dict, identity: str, path) -> None:
    """Modal invariance trains the encoder to make the frozen LLM say from speech what it said to the
    typed transcript: another LLM's answers are the wrong target. Compared by weights, not dtype."""
    made_by, ours = header["llm"].rsplit(":", 1)[0], identity.rsplit(":", 1)[0]
    if made_by != ours:
        raise SystemExit(f"{path} holds the answers of {made_by}, but this model's frozen LLM is {ours}: make its "
                         "own with `audiochat-bench data responses --llm SPEC --out FILE`, then pass --responses FILE")


def build(cfg: E2ETrainConfig, origin: Origin, model: AudioChatLlama | None = None, rows=(), header=None,
          asr_texts=None, lora_r: int = 0) -> Run:
    """The model (resumed, continued from an exported checkpoint with `lora_r` adapters added where it
    had none, `model` as given, or built from `cfg.model`), AdamW over its trainable groups, DDP where
    torchrun started several processes, the batches from `origin.step` on (each rank its own), and the
    step: the loss of the requests' targets, with the KL term where `kl_weight` > 0."""
    from systems.audiochatllama.data import transcripts

    rank, world = _dist()
    if origin.path is not None:
        model = AudioChatLlama.load(origin.path, llm=model.llm if model else None,
                                    encoder=model.encoder if model else None, add_lora=0 if origin.resumed else lora_r)
        cfg.model = model.cfg
    elif model is None:
        model = AudioChatLlama.build(cfg.model)
    if header is not None:
        check_responses_llm(header, model.llm.identity, cfg.responses)
    model.to(cfg.device).train()
    model.lm.eval()  # the frozen LLM: no dropout
    groups = [{"params": [p for p in model.projector.parameters()], "lr": cfg.lr},
              {"params": [p for n, p in model.lm.named_parameters() if p.requires_grad], "lr": cfg.lr}]
    if cfg.model.train_encoder:
        groups.append({"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    rows = response_targets(model.llm, rows)
    asr_rows = asr_targets(model.llm, asr_texts or transcripts()) if cfg.asr_prob else ()
    data = batches(rows, cfg, f"{cfg.seed}-{rank}", asr_rows, origin.step)

    def loss(batch) -> torch.Tensor:
        requests, targets, picked = batch
        with torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            teacher = teacher_logits(model, picked) if cfg.kl_weight else None
            return wrapped(requests, targets, teacher, cfg.kl_weight)  # forward = loss (DDP syncs through it)

    def save(directory: Path, record: dict) -> None:  # the model's own config.json carries the record too
        model.save(directory, {"train": record["config"], **{k: record[k] for k in ("step", "start_step", "last_log")}})

    return Run(model, opt, data, loss, save, stats=lambda: {"world": world}, lr_floor=0.1, rank=rank, world=world)


def train(cfg: E2ETrainConfig, out: Path, max_minutes: float | None = None, model: AudioChatLlama | None = None,
          rows: list[dict] | None = None, init_from: Path | None = None, fit_steps: bool = False,
          asr_texts: list[str] | None = None) -> dict:
    """Train into `out` with the one loop (`systems.training.fit`), resuming from `out/ckpt` if it exists;
    else, with `init_from` (an exported checkpoint), continue from its trainable weights and step with a
    fresh optimiser. With `fit_steps` and `max_minutes`, `steps` is lowered to what the measured speed fits
    in the time (one process only). `asr_texts`: the ASR task's transcripts (default: all training
    transcripts, with `cfg.asr_prob`)."""
    from systems.audiochatllama.data import read_responses

    header = None
    if rows is None:
        header, rows = read_responses(cfg.responses)
    lora_r = cfg.model.lora_r  # asked for now: adapters added to a checkpoint trained without
    result = fit(cfg, out, lambda c, origin: build(c, origin, model, rows, header, asr_texts, lora_r),
                 init_from=init_from, keep=RUN_OPTIONS, keep_init=(*RUN_OPTIONS, *NEW_RUN_OPTIONS),
                 old_defaults=OLD_DEFAULTS, max_minutes=max_minutes, fit_steps=fit_steps)
    if _dist()[1] > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()  # a rank leaving with it alive can abort at exit
    return result  # (the last log may be a few steps behind)


PRESETS = {
    "ctc": {"model": {"encoder": "ctc", "encoder_path": "systems/checkpoints/ctc-conformer", "stack": 0}},
    "whisper": {"model": {"encoder": "whisper", "encoder_path": "whisper-base", "stack": 0, "train_encoder": False}},
    # the token bridge on the `train bridge` encoder (its CTC head over the LLM's tokens), and the paper's
    # continuous projector on that same encoder (the A/B's other arm)
    "tokens": {"model": {"encoder": "token-ctc", "encoder_path": "systems/checkpoints/token-ctc-smollm2",
                         "bridge": "tokens", "stack": 1}},
    "tokens-continuous": {"model": {"encoder": "token-ctc", "encoder_path": "systems/checkpoints/token-ctc-smollm2",
                                    "bridge": "continuous", "stack": 0}},
    # the token bridge on the token head over Whisper's frozen encoder (`train bridge --init whisper-base`):
    # adapter, head and residual train, Whisper does not
    "tokens-whisper": {"model": {"encoder": "token-ctc", "encoder_path": "systems/checkpoints/token-ctc-whisper-smollm2",
                                 "bridge": "tokens", "stack": 1}},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="audiochat-bench train e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ctc", choices=sorted(PRESETS))
    ap.add_argument("--out", default=None, help="run folder (default results/train/e2e-<preset>); resumes if it holds one")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--fit-steps", action="store_true",
                    help="with --max-minutes: lower --steps to what the measured speed fits in that time, so the "
                         "learning-rate schedule finishes (for a machine lent for a fixed time; one process only)")
    ap.add_argument("--encoder-path", default=None)
    ap.add_argument("--llm", default=None,
                    help="the frozen chat LLM (an embedded name, a local directory or a hub id; default smollm2): "
                         "the --responses file must be its answers (`data responses --llm`), and a token-bridge "
                         "preset needs a head over its tokens (`train bridge --llm`, then --encoder-path)")
    ap.add_argument("--lora-r", type=int, default=None, help="LoRA rank on the LLM (ablation; default off)")
    ap.add_argument("--export", metavar="DIR", help="only copy the run's checkpoint (weights as float16 + config) to DIR")
    ap.add_argument("--init-from", metavar="DIR", help="start a new run from an exported checkpoint (weights and step)")
    add_dataclass_options(ap, E2ETrainConfig)
    ap.add_argument("--train-encoder", action=argparse.BooleanOptionalAction, default=None,
                    help="fine-tune the audio encoder too (default: yes for ctc, no for whisper)")
    ap.add_argument("--out-norm", action=argparse.BooleanOptionalAction, default=None,
                    help="RMS-normalise the projector's output to the LLM's token-embedding scale (default: no)")
    args = ap.parse_args(argv)
    out = Path(args.out or f"results/train/e2e-{args.preset}")
    if args.export:
        dst = Path(args.export)
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("trainable.safetensors", "config.json"):
            shutil.copy(out / "ckpt" / name, dst / name)
        copy_record(out / "ckpt", dst)
        halve_safetensors(dst / "trainable.safetensors")
        print(dst)
        return 0
    cfg = config_from_dict(E2ETrainConfig, PRESETS[args.preset])
    for k in ("encoder_path", "llm", "lora_r", "train_encoder", "out_norm"):  # model options
        if getattr(args, k) is not None:
            setattr(cfg.model, k, getattr(args, k))
    apply_options(cfg, args)
    head = Path(cfg.model.encoder_path or "") / "bridge.json"
    if cfg.model.encoder == "token-ctc" and head.exists() and not (out / "ckpt").exists():
        over = json.loads(head.read_text()).get("llm")
        if over != cfg.model.llm:
            raise SystemExit(f"{head.parent} predicts the tokens of {over!r}, not of --llm {cfg.model.llm!r}: train a "
                             f"head over this LLM's tokens (`train bridge --llm {cfg.model.llm}`) and pass it as "
                             "--encoder-path")
    print(json.dumps(train(cfg, out, args.max_minutes, init_from=Path(args.init_from) if args.init_from else None,
                           fit_steps=args.fit_steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
