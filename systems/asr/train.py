"""Training recipe for the CTC Conformer ASR: `audiochat-bench train asr [--preset small] [...]`.

Reads top to bottom: config → text → tokenizer → model → data stream → optimiser → one step's
loss, handed to the one training loop (`systems/training.py`: logs, dev WER, checkpoints, resume) → export.

Speech is synthesised on the fly by the project's espeak TTS from the training sentences
(systems/asr/corpus.py; never ../shared/data), in training voices only (dev and test voices are
held out), with gain and white-noise augmentation and SpecAugment on the features.
Checkpoints hold the model weights (safetensors), the optimiser state and the config (the loop's
layout), so a killed run resumes where it stopped; `--export DIR` writes a loadable model directory.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from systems.asr.ctc import log_mel
from systems.augment import AUGMENT_HELP, Levers, gain_and_noise
from systems.training import (Origin, Run, add_dataclass_options, apply_options, copy_record, fit, optimizer_step,
                              step_rngs, warmup_cosine)
from systems.training import saved_config as _saved_config


@dataclass
class ASRTrainConfig:
    hidden: int = 192
    layers: int = 6
    heads: int = 4
    ffn: int = 768
    kernel: int = 15
    subsampling: int = 8
    dropout: float = 0.1
    vocab_size: int = 512  # ~3 characters per token: at 80 ms frames CTC has room even for fast speech
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 500
    steps: int = 30000
    weight_decay: float = 1e-3
    grad_clip: float = 5.0  # the gradient norm's ceiling (0: none)
    noise_prob: float = 0.5
    snr_range: tuple = (5.0, 35.0)
    gain_db_range: tuple = (-10.0, 3.0)
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_frac: float = 0.05
    seed: int = 0
    threads: int = 1
    workers: int = 1
    bf16: bool = False  # autocast the forward pass to bfloat16 (faster on GPUs and on CPUs with AMX)
    device: str = "cpu"  # "cuda" where a GPU is lent (raise --workers: speech is synthesised on the CPU)
    # share of utterances that are random sequences of common English words (wordfreq's top
    # `wordlist_top` that have a vowel, so are read as words rather than spelled; drawn with weight
    # frequency^0.5): the training prose covers only ~84 % of everyday words, and a character CTC
    # model cannot spell words it has never heard
    wordlist_frac: float = 0.0
    wordlist_top: int = 30000
    log_every: int = 25
    eval_every: int = 500
    ckpt_every: int = 100
    dev_size: int = 120
    llm_sentences: str = "systems/asr/data/llm_sentences.txt"
    # the voice engines the clips come from, with weights (`bench.voices.VoiceMix`: espeak,kokoro or
    # espeak=3,kokoro=1): training voices only, never a test or dev voice, never the evaluation-only voice
    voices: str = "espeak,kokoro"
    augment: str = field(default="", metadata={"help": AUGMENT_HELP})


# what a checkpoint saved before an option existed ran with
OLD_DEFAULTS = {"voices": "espeak"}
LR_FLOOR = 0.05  # the cosine decays to this share of `lr`

PRESETS = {
    # Characters with 40 ms frames: learns on a CPU in minutes (../shared/FACTS.md). "bpe", the defaults
    # (512 pieces at 80 ms), leaves the CTC blank plateau only after hundreds of steps on a CPU.
    "small": dict(hidden=144, layers=6, heads=4, ffn=576, kernel=15, subsampling=4, vocab_size=30),
    "bpe": {},
    # Wider and deeper characters-at-40-ms model with big batches, for a GPU (speech synthesis on
    # many CPU workers keeps it fed)
    "base": dict(hidden=192, layers=8, heads=4, ffn=768, kernel=15, subsampling=4, vocab_size=30, batch_size=64,
                 wordlist_frac=0.3, bf16=True, eval_every=1000, ckpt_every=1000, log_every=50),
    "tiny": dict(hidden=32, layers=2, heads=2, ffn=64, kernel=7, subsampling=4, vocab_size=128, batch_size=4, warmup=2,
                 steps=8, lr=3e-3, log_every=1, eval_every=1000, ckpt_every=4, dev_size=4, workers=0,
                 noise_prob=0.0, dropout=0.0),
}


# options of the machine, which a resumed run takes from the command line or the preset; the rest
# come from the run's saved config, except those the user typed (see `train`); the architecture
# always comes from the weights
RUN_OPTIONS = ("threads", "workers", "bf16", "device")
ARCHITECTURE = ("hidden", "layers", "heads", "ffn", "kernel", "subsampling", "vocab_size")


def saved_config(directory: Path, overrides: dict | None = None) -> tuple[ASRTrainConfig, dict]:
    """The config a run saved in DIR (its training record, `systems.training.read_record`), with
    `overrides` applied, and the whole record (step, start_step, last log line)."""
    return _saved_config(ASRTrainConfig, directory, overrides, OLD_DEFAULTS)


def corpus(cfg: ASRTrainConfig) -> list[str]:
    from systems.asr.corpus import suite_texts, training_sentences

    text = training_sentences()
    extra = Path(cfg.llm_sentences)
    if extra.exists():
        held = set(suite_texts("dev")) | set(suite_texts("test"))
        text += [s for s in extra.read_text().splitlines() if s and s not in held]
    return list(dict.fromkeys(text))


def dev_set(cfg: ASRTrainConfig, draws: int = 1) -> list[tuple[str, str]]:
    """(text, voice) pairs: the authored ASR dev sentences in dev voices; with `draws` > 1, the same
    sentences again in that many draws of dev voices in all (a steadier measure for small choices)."""
    from bench.tts import Voice
    from corpus import normalize, split_rows

    texts = [normalize(r["text"]) for r in split_rows("asr", "dev")]
    if not texts:
        from systems.asr.corpus import stdlib_sentences
        texts = stdlib_sentences()[-cfg.dev_size:]  # fallback only; excluded from training below
    texts = texts[: cfg.dev_size]
    return [(t, Voice.sample("dev", f"asr-dev-{i}" if k == 0 else f"asr-dev-{k}-{i}"))
            for k in range(draws) for i, t in enumerate(texts)]


class SpeechStream(torch.utils.data.IterableDataset):
    """An endless stream of (audio, labels, seconds of audio) batches of synthetic speech, where audio is
    (features, mask) on a CPU run and (padded waveforms, lengths) on a GPU run (see `train_step`); the
    first is step `first_step`'s, and each is a function of its step (`systems.training.step_rngs`)."""

    def __init__(self, sentences, tokenizer, cfg: ASRTrainConfig, first_step: int, words: dict[str, float] | None = None):
        self.sentences, self.tok, self.cfg, self.first_step = sentences, tokenizer, cfg, first_step
        words = {w: f for w, f in (words or {}).items() if re.search("[aeiouy]", w)}
        self.words = list(words)
        self.word_cum = list(itertools.accumulate(f ** 0.5 for f in words.values()))

    def text(self, rng: random.Random) -> str:
        if self.words and rng.random() < self.cfg.wordlist_frac:
            return " ".join(rng.choices(self.words, cum_weights=self.word_cum, k=rng.randint(4, 12)))
        return rng.choice(self.sentences)

    def __iter__(self):
        from transformers import ParakeetFeatureExtractor

        from bench.voices import VoiceMix

        fe = ParakeetFeatureExtractor()
        cfg = self.cfg
        mix, levers = VoiceMix.parse(cfg.voices), Levers.parse(cfg.augment)
        for rng, nprng, lever_rng in step_rngs(cfg.seed, self.first_step):
            texts = [self.text(rng) for _ in range(cfg.batch_size)]
            wavs = [torch.from_numpy(levers(gain_and_noise(mix.speak(t, rng).samples, cfg, rng, nprng), lever_rng))
                    for t in texts]
            lengths = torch.tensor([w.numel() for w in wavs])
            waves = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)  # (B, samples)
            ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
            labels = torch.full((len(ids), max(map(len, ids))), self.tok.pad_token_id, dtype=torch.long)
            for i, s in enumerate(ids):
                labels[i, :len(s)] = torch.tensor(s)
            # on a CPU run the workers compute the features (in parallel with the step); with a GPU the
            # main process does, on the GPU, where they cost next to nothing (on a worker's CPU they cost
            # more than synthesising the speech)
            audio = log_mel(fe, waves, lengths) if cfg.device == "cpu" else (waves, lengths)
            yield audio, labels, float(lengths.sum()) / 16000


def spec_augment(x: torch.Tensor, mask: torch.Tensor, cfg: ASRTrainConfig, g: torch.Generator | None) -> torch.Tensor:
    """Frequency and time masking on (B, T, F) features (set to zero, the mean after normalisation):
    `freq_masks` bands of 0..`freq_mask_width` mel bins and `time_masks` spans of up to
    `time_mask_frac` of each utterance's frames. The random draws come from the CPU generator `g`
    (None: torch's own); the masking runs on the features' device in a few vectorised operations."""
    B, T, F = x.shape
    lengths = mask.sum(-1).cpu()  # (B,)

    def bands(n: int, width_max: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
        """(B, size) bool: n bands per row, of width 0..width_max[b], starting in [0, extent[b] - width)."""
        w = (torch.rand(B, n, generator=g) * (width_max[:, None] + 1)).long()
        start = (torch.rand(B, n, generator=g) * (extent[:, None] - w).clamp(min=1)).long()
        pos = torch.arange(size)[None, None]
        return ((pos >= start[..., None]) & (pos < (start + w)[..., None])).any(1)

    freq = bands(cfg.freq_masks, torch.full((B,), cfg.freq_mask_width), torch.full((B,), F), F)
    time = bands(cfg.time_masks, (cfg.time_mask_frac * lengths).long().clamp(min=1), lengths, T)
    drop = freq.to(x.device)[:, None, :] | time.to(x.device)[:, :, None]  # (B, T, F)
    return x.masked_fill(drop, 0.0)


def lr_at(step: int, cfg: ASRTrainConfig, start: int = 0) -> float:
    """`cfg.lr` warmed up from `start` (see `warmup_cosine`), decaying to 5 % of it at `cfg.steps`."""
    return cfg.lr * warmup_cosine(step, cfg.warmup, cfg.steps, LR_FLOOR, start)


def ctc_loss(model, batch, cfg: ASRTrainConfig, g: torch.Generator | None, fe=None) -> torch.Tensor:
    """The CTC loss on an (audio, labels) batch, where audio is (features, mask) or, for a GPU run,
    (waveforms, lengths) that `fe` turns into features on the GPU; SpecAugment on the features."""
    audio, labels = batch
    dev = model.device
    if fe is not None:
        feats, mask = log_mel(fe, audio[0].to(dev, non_blocking=True), audio[1])
    else:
        feats, mask = (t.to(dev) for t in audio)
    feats = spec_augment(feats, mask, cfg, g)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):  # the CTC loss itself stays fp32
        return model(input_features=feats, attention_mask=mask, labels=labels.to(dev)).loss


def train_step(model, opt, batch, lr: float, cfg: ASRTrainConfig, g: torch.Generator, fe=None) -> float:
    """One optimisation step at learning rate `lr` on an (audio, labels) batch (see `ctc_loss`); returns the loss."""
    for group in opt.param_groups:
        group["lr"] = lr
    loss = ctc_loss(model, batch, cfg, g, fe)
    optimizer_step(opt, loss, cfg.grad_clip)
    return loss.item()


def evaluate(asr, dev) -> float:
    """Dev WER of `asr` on the (text, voice) pairs of `dev`, as the `asr` task scores it."""
    from bench.textnorm import wer
    from bench.tts import synthesize

    audios = [synthesize(t, v) for t, v in dev]
    hyps = asr.transcribe(audios)
    return wer([t for t, _ in dev], hyps)


def build(cfg: ASRTrainConfig, origin: Origin) -> Run:
    """The model (from scratch, or the weights at `origin.path`), AdamW, the speech stream from
    `origin.step` on, and the step: the CTC loss with SpecAugment (masks drawn from torch's generator)."""
    from systems.asr.ctc import CTCASR, train_tokenizer

    dev = dev_set(cfg)
    held = {t for t, _ in dev}
    sentences = [s for s in corpus(cfg) if s not in held]
    if origin.path is not None:
        asr = CTCASR.from_pretrained(origin.path, decoder="greedy")
        asr.lexicon = None  # dev WER during training is plain greedy, as in a run from scratch
    else:
        tok = train_tokenizer(sentences, cfg.vocab_size)
        asr = CTCASR.build(tok, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn, cfg.kernel, cfg.subsampling, cfg.dropout)
    model = asr.model.to(cfg.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    words = None
    if cfg.wordlist_frac > 0:
        from systems.asr.lm import english_word_frequencies
        words = english_word_frequencies(cfg.wordlist_top)
    stream = SpeechStream(sentences, asr.tokenizer, cfg, origin.step, words=words)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0, pin_memory=cfg.device != "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, {len(sentences)} training sentences, {len(dev)} dev", file=sys.stderr)
    fe, heard = (None if cfg.device == "cpu" else asr.fe), [0.0]

    def loss(batch) -> torch.Tensor:
        audio, labels, seconds = batch
        heard[0] += seconds
        return ctc_loss(model, (audio, labels), cfg, None, fe)

    return Run(asr, opt, loader, loss, save=lambda d, record: asr.save_pretrained(d),
               evaluate=lambda: {"dev_wer": evaluate(asr, dev)}, stats=lambda: {"audio_h": round(heard[0] / 3600, 3)},
               lr_floor=LR_FLOOR)


def train(cfg: ASRTrainConfig, out: Path, max_minutes: float | None = None, progress: bool = True,
          init_from: Path | None = None, given: tuple[str, ...] = (), fit_steps: bool = False) -> dict:
    """Train into `out` with the one loop (`systems.training.fit`), resuming from `out/ckpt` if it exists;
    else, with `init_from` (an exported model directory), continue from those weights and that step with a
    fresh optimiser, warmed up again over `warmup` steps (how a new machine carries on from the committed
    checkpoint). Either way the saved config is kept except for RUN_OPTIONS and the options named in
    `given` (those the user typed; never the architecture). With `fit_steps` and `max_minutes`, `steps`
    is lowered to what the measured speed fits in the time (the checkpoint records the result)."""
    keep = tuple(set(RUN_OPTIONS) | set(given) - set(ARCHITECTURE))
    return fit(cfg, out, build, init_from=init_from, keep=keep, old_defaults=OLD_DEFAULTS,
               max_minutes=max_minutes, fit_steps=fit_steps, progress=progress)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="audiochat-bench train asr", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--out", default="results/train/asr-small", help="run folder (checkpoints, log); resumes if it holds one")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--fit-steps", action="store_true",
                    help="with --max-minutes: lower --steps to what the measured speed fits in that time, so "
                         "the learning-rate schedule finishes (for a machine lent for a fixed time)")
    ap.add_argument("--export", metavar="DIR", help="only export the run's checkpoint as a model directory")
    ap.add_argument("--init-from", metavar="DIR",
                    help="start a new run from an exported model: its weights, step and training config, "
                         "except the options typed here; a fresh optimiser, warmed up again")
    add_dataclass_options(ap, ASRTrainConfig)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.export:  # the model (float16 weights), plus the lexicon of its training text for decoding
        from systems.asr.ctc import CTCASR

        CTCASR.from_pretrained(out / "ckpt", decoder="greedy").save_pretrained(args.export, half=True)
        copy_record(out / "ckpt", Path(args.export))
        words = sorted({w for s in corpus(saved_config(out / "ckpt")[0]) for w in s.split()})
        Path(args.export, "lexicon.txt").write_text("\n".join(words) + "\n")
        print(args.export)
        return 0
    cfg = ASRTrainConfig(**PRESETS[args.preset])
    given = apply_options(cfg, args)
    result = train(cfg, out, args.max_minutes, init_from=Path(args.init_from) if args.init_from else None,
                   given=given, fit_steps=args.fit_steps)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
