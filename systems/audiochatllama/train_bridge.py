"""Stage 1 of the token bridge: `audiochat-bench train bridge [...]`.

The encoder of the trained character CTC ASR gets a small Transformer adapter and a CTC head over the
LLM's own tokens (those of the training text, plus a fallback; `bridge.py`), trained like an ASR: the
CTC loss on the transcript's LLM tokens, no LLM in the loop. By default (`--cached`, the CPU route) the
encoder stays frozen, every training text is spoken `voices_per_text` times once (espeak in training
voices, gain, noise) and encoded once, and adapter + head train on those states (`--mask-states`:
SpecAugment on them each step); `--no-cached` trains the encoder too on the ASR recipe's fresh speech
every step (`systems/asr/train.py`: SpecAugment too). Dev WER (greedy, decoded by the LLM's tokenizer)
on the ASR dev sentences in dev voices. The one training loop (`systems/training.py`) logs, checkpoints
(weights, optimiser, config) every `ckpt_every` steps and resumes a killed run where it stopped;
`--export DIR` writes the encoder directory that `train e2e --preset tokens` starts from.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.voices import VoiceMix
from systems.augment import Levers, gain_and_noise
from systems.asr.train import OLD_DEFAULTS, ASRTrainConfig, SpeechStream, dev_set, spec_augment
from systems.training import Origin, Run, add_dataclass_options, apply_options, copy_record, fit, step_rngs


@dataclass
class BridgeTrainConfig(ASRTrainConfig):
    """The ASR recipe's speech and augmentation options (its architecture options are unused: the
    encoder comes from `init`), plus the head's."""
    # the encoder under the head: a character CTC model's directory (its encoder starts a fresh head),
    # "whisper-base" (the embedded Whisper's encoder, frozen: the cached route only), or a token head's
    # own directory (`bridge.json`: that head, adapter and vocabulary train on, e.g. on new voice passes)
    init: str = "systems/checkpoints/ctc-conformer"
    llm: str = "smollm2"  # whose tokens the head predicts
    batch_size: int = 16
    lr: float = 2e-3  # the new head
    encoder_lr: float = 3e-4  # the pretrained encoder
    warmup: int = 200
    steps: int = 4000
    log_every: int = 25
    eval_every: int = 250
    ckpt_every: int = 100
    dev_size: int = 60
    adapter_layers: int = 2  # Transformer layers between the encoder and the token head
    # Cached (the CPU route): the encoder stays frozen; `voices_per_text` clips of every training text are
    # synthesised once (training voices, gain and noise as below) and encoded once, and the adapter and
    # head train on those states, a step costing milliseconds instead of an encoder pass. Not cached: every
    # batch synthesised afresh and the encoder trained too (`encoder_lr`), as the ASR recipe does.
    cached: bool = True
    voices_per_text: int = 2
    # the first voice pass: passes first_pass … first_pass + voices_per_text - 1 are used, so a head
    # continued from `init` can train on speech it has never heard (its own run used passes 0 and 1)
    first_pass: int = 0
    # cached route: SpecAugment on the cached states every step (`time_masks` spans of up to `time_mask_frac`
    # of a clip, `freq_masks` bands of up to `freq_mask_width` channels), so that fixed clips vary by epoch
    mask_states: bool = False
    # the head's vocabulary: the training text's LLM tokens; with N > 1 only those it has at least N times,
    # plus the one-character tokens, and every other token spelled with those (bridge.TokenVocab)
    min_count: int = 1
    # voice passes of a seeded sample of this many training texts (0: every text): a cheaper pass, e.g. to
    # measure one augmentation lever against a pass without it
    texts: int = 0


RUN_OPTIONS = ("threads", "workers", "bf16", "device", "steps")


def cached_states(encoder, texts: list[str], cfg: BridgeTrainConfig, out: Path, progress: bool = True):
    """[(states (T, C) float16, text)] of `voices_per_text` synthetic clips of every text, through the
    frozen encoder (not the adapter). Each voice pass k (its own random voices, gains and noise) is
    stored in `out/states-v{k}.pt`, so a resumed run, another head or another vocabulary reuses it,
    and a run with more voices a text computes only the passes it lacks."""
    data = []
    mix, levers = VoiceMix.parse(cfg.voices), Levers.parse(cfg.augment)
    for k in range(cfg.first_pass, cfg.first_pass + cfg.voices_per_text):
        tag = "" if mix.tag == "espeak" and not levers.probs else f"-{mix.tag}{levers.tag}"
        tag += f"-n{cfg.texts}" if cfg.texts else ""
        tag += _signal_tag(cfg)
        path = out / f"states{tag}-v{k}.pt"
        if not path.exists():
            states = _encode_pass(encoder, texts, cfg, k, progress)
            tmp = path.with_suffix(".tmp")
            torch.save(states, tmp)
            tmp.replace(path)
        data += torch.load(path, weights_only=True)
    return data


def _signal_tag(cfg: BridgeTrainConfig) -> str:
    """The gain and noise settings of a pass where they are not the recipe's defaults (`-gain0_0`,
    `-snr300_300`, `-noise0`), so a pass made without gains or without noise is never read as one with."""
    tag = ""
    for name, short in (("gain_db_range", "gain"), ("snr_range", "snr"), ("noise_prob", "noise")):
        value, default = (v if isinstance(v, (tuple, list)) else (v,)
                          for v in (getattr(cfg, name), getattr(BridgeTrainConfig, name)))
        if tuple(value) != tuple(default):
            tag += f"-{short}" + "_".join(f"{v:g}" for v in value)
    return tag


def _encode_pass(encoder, texts: list[str], cfg: BridgeTrainConfig, k: int, progress: bool) -> list:
    """Voice pass `k` of `cached_states`: every text once, shortest first (a chunk's clips are of like
    length, so little padding is encoded), in random training voices, gains and noise."""
    from tqdm import tqdm

    mix, levers = VoiceMix.parse(cfg.voices), Levers.parse(cfg.augment)
    rng = random.Random(f"{cfg.seed}-bridge-cache-{k}")
    nprng = np.random.default_rng([cfg.seed, k])
    lever_rng = random.Random(f"{cfg.seed}-bridge-augment-{k}")
    jobs = sorted(texts, key=len)
    out = []
    encoder.eval()
    bar = tqdm(total=len(jobs), desc=f"bridge: encoding training speech (voice pass {k})", unit="clip",
               disable=not progress, file=sys.stderr)
    for i in range(0, len(jobs), 32):
        chunk = jobs[i:i + 32]
        wavs = []
        for t in chunk:
            wavs.append(levers(gain_and_noise(mix.speak(t, rng).samples, cfg, rng, nprng), lever_rng))
        for t, s in zip(chunk, encoder.base_states(wavs)):
            out.append((s.half().clone(), t))
        bar.update(len(chunk))
    bar.close()
    return out


def cached_batches(data, cfg: BridgeTrainConfig, seed: int, first_step: int = 0):
    """Endless (states (B, T, C), lengths, labels) batches drawn from the cached clips, the first for step
    `first_step`, each a function of its step (`systems.training.step_rngs`)."""
    for rng, _, _ in step_rngs(seed, first_step):
        picked = [data[rng.randrange(len(data))] for _ in range(cfg.batch_size)]
        lengths = torch.tensor([s.shape[0] for s, _ in picked])
        states = torch.nn.utils.rnn.pad_sequence([s.float() for s, _ in picked], batch_first=True)
        labels = torch.zeros(len(picked), max(len(l) for _, l in picked), dtype=torch.long)
        for i, (_, l) in enumerate(picked):
            labels[i, :len(l)] = torch.tensor(l)
        yield states, lengths, labels


def training_texts() -> list[str]:
    """The AudioChatLlama training transcripts (QA train questions, the ASR corpus; no dev or test
    text), normalised to what speech carries."""
    from systems.asr.corpus import normalize
    from systems.audiochatllama.data import transcripts

    return [t for t in dict.fromkeys(normalize(s) for s in transcripts()) if t]


def evaluate(encoder, tokenizer, dev) -> float:
    """Dev WER of the bridge's greedy token transcripts, as the `asr` task scores a transcript."""
    from bench.textnorm import wer
    from bench.tts import synthesize

    hyps = [tokenizer.decode(ids) for ids in encoder.transcribe_ids([synthesize(t, v) for t, v in dev])]
    return wer([t for t, _ in dev], hyps)


def load_encoder(cfg: BridgeTrainConfig, origin: Origin, texts: list[str], tokenizer, encoder=None):
    """The encoder and head: the checkpoint's on resume, else `encoder`, else built from `cfg.init` (Whisper's
    frozen encoder, a token head's own directory, or a character CTC model's encoder with a fresh head)."""
    from systems.audiochatllama.bridge import TokenCTCEncoder, WhisperTokenCTCEncoder

    if origin.path is not None:
        return TokenCTCEncoder.load(origin.path)
    if encoder is not None:
        return encoder
    if cfg.init.startswith("whisper"):
        return WhisperTokenCTCEncoder.from_whisper(cfg.init, tokenizer, texts, cfg.llm, cfg.adapter_layers,
                                                   min_count=cfg.min_count)
    if (TokenCTCEncoder.resolve(cfg.init) / "bridge.json").exists():
        encoder = TokenCTCEncoder.load(cfg.init)
        if encoder.meta.get("llm") != cfg.llm:
            raise ValueError(f"{cfg.init} is a token head over {encoder.meta.get('llm')}'s tokens, not {cfg.llm}'s: "
                             f"pass --llm {encoder.meta.get('llm')}, or a character CTC model's directory as --init")
        return encoder
    return TokenCTCEncoder.from_ctc(cfg.init, tokenizer, texts, cfg.llm, cfg.adapter_layers, cfg.min_count)


def optimizer(cfg: BridgeTrainConfig, encoder) -> torch.optim.AdamW:
    """AdamW over the head and adapter at `lr`, and, off the cached route, the encoder under them at
    `encoder_lr` (on the cached route it is frozen: its states are computed once)."""
    base = encoder.base_parameters()  # the encoder under the adapter (Whisper's: none, it stays frozen)
    if not cfg.cached and not base:
        raise ValueError("this encoder stays frozen (Whisper's): train its head with the cached route, --cached")
    for q in base:
        q.requires_grad_(not cfg.cached)
    own = {id(q) for q in base}
    groups = [{"params": [p for p in encoder.parameters() if id(p) not in own], "lr": cfg.lr}]
    if not cfg.cached:
        groups.append({"params": base, "lr": cfg.encoder_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def build(cfg: BridgeTrainConfig, origin: Origin, out: Path, texts=None, tokenizer=None, encoder=None,
          progress: bool = True) -> Run:
    """The encoder and head (`load_encoder`), AdamW (`optimizer`), the batches (cached states or fresh
    speech) from `origin.step` on, and the step: the CTC loss over the LLM's tokens."""
    from transformers import AutoTokenizer

    from systems.audiochatllama.bridge import ClassTokenizer
    from systems.llm import resolve_llm

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(resolve_llm(cfg.llm)[0])
    dev = dev_set(cfg)
    held = {t for t, _ in dev}
    texts = [t for t in (texts if texts is not None else training_texts()) if t not in held]
    if 0 < cfg.texts < len(texts):
        texts = random.Random(f"{cfg.seed}-texts").sample(texts, cfg.texts)
    encoder = load_encoder(cfg, origin, texts, tokenizer, encoder)
    encoder.to(cfg.device).train()
    opt = optimizer(cfg, encoder)
    if cfg.cached:
        labels = ClassTokenizer(tokenizer, encoder.vocab)
        data = [(s, labels(t)["input_ids"]) for s, t in cached_states(encoder, texts, cfg, out, progress)]
        encoder.train()
        batches = cached_batches(data, cfg, cfg.seed, origin.step)
    else:
        stream = SpeechStream(texts, ClassTokenizer(tokenizer, encoder.vocab), cfg, origin.step)
        batches = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                              persistent_workers=cfg.workers > 0)
    if progress:
        print(f"{len(encoder.vocab)} classes ({len(encoder.vocab.ids)} LLM tokens), {len(texts)} training texts, "
              f"{len(dev)} dev", file=sys.stderr)
    heard, dev_type = [0.0], torch.device(cfg.device).type

    def loss(batch) -> torch.Tensor:  # SpecAugment's masks from torch's generator (the loop keeps its state)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=cfg.bf16):
            if cfg.cached:
                states, lengths, labels = batch
                if cfg.mask_states:
                    states = spec_augment(states, torch.arange(states.shape[1])[None] < lengths[:, None], cfg, None)
                return encoder.ctc_loss_states(*encoder.adapt(states.to(cfg.device), lengths), labels.to(cfg.device))
            (feats, mask), labels, seconds = batch
            heard[0] += seconds
            feats, mask = feats.to(cfg.device), mask.to(cfg.device)
            return encoder.ctc_loss(spec_augment(feats, mask, cfg, None), mask, labels.to(cfg.device))

    return Run(encoder, opt, batches, loss, save=lambda d, record: encoder.save(d),
               evaluate=lambda: {"dev_wer": evaluate(encoder, tokenizer, dev)},
               stats=lambda: {"audio_h": round(heard[0] / 3600, 3)})


def train(cfg: BridgeTrainConfig, out: Path, max_minutes: float | None = None, fit_steps: bool = False,
          texts: list[str] | None = None, tokenizer=None, encoder=None, progress: bool = True) -> dict:
    """Train into `out` with the one loop (`systems.training.fit`), resuming from `out/ckpt` if it holds one.
    `texts`, `tokenizer`, `encoder`: stand-ins for tests (default: the training transcripts, the LLM's
    tokenizer, `cfg.init`'s encoder)."""
    return fit(cfg, out, lambda c, origin: build(c, origin, out, texts, tokenizer, encoder, progress),
               keep=RUN_OPTIONS, old_defaults=OLD_DEFAULTS, max_minutes=max_minutes, fit_steps=fit_steps,
               progress=progress)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="audiochat-bench train bridge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/train/bridge", help="run folder; resumes if it holds a checkpoint")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--fit-steps", action="store_true",
                    help="with --max-minutes: lower --steps to what the measured speed fits in that time")
    ap.add_argument("--export", metavar="DIR", help="only copy the run's encoder (float16) and log to DIR")
    add_dataclass_options(ap, BridgeTrainConfig, skip=("hidden", "layers", "heads", "ffn", "kernel", "subsampling",
                                                        "vocab_size", "dropout", "llm_sentences"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.export:
        from systems.audiochatllama.bridge import TokenCTCEncoder

        TokenCTCEncoder.load(out / "ckpt").save(args.export, half=True)
        copy_record(out / "ckpt", Path(args.export))
        print(args.export)
        return 0
    cfg = BridgeTrainConfig()
    apply_options(cfg, args)
    print(json.dumps(train(cfg, out, args.max_minutes, fit_steps=args.fit_steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
