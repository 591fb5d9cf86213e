"""Training recipe for the CTC Conformer ASR: `audiochat-bench train asr [--preset small] [...]`.

Reads top to bottom: config → text → tokenizer → model → data stream → optimiser → loop with
periodic logs, dev WER, checkpoints and resume → export.

Speech is synthesised on the fly by the project's espeak TTS from the training sentences
(systems/asr/corpus.py; never ../shared/data), in training voices only (dev and test voices are
held out), with gain and white-noise augmentation and SpecAugment on the features.
Checkpoints hold the model weights (safetensors), the optimiser state and the config, so a killed
run resumes where it stopped; `--export DIR` writes a loadable model directory with a card.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from systems.asr.ctc import log_mel
from systems.augment import AUGMENT_HELP, Levers, gain_and_noise
from systems.training import (StepFitter, add_dataclass_options, apply_options, replace_dir, resume_log,
                              warmup_cosine)


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
    bf16: bool = False  # autocast the forward pass to bfloat16 (1.3-1.5x faster on CPUs with AMX; measured)
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

PRESETS = {
    # Characters with 40 ms frames: the configuration measured to learn on CPU (../shared/FACTS.md);
    # a 512-piece BPE at 80 ms ("bpe") sat on the CTC blank plateau for 500+ steps here.
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
    """The config a run saved in DIR/train_config.json, with `overrides` applied, and the whole record
    (step, start_step, last log line)."""
    saved = json.loads((Path(directory) / "train_config.json").read_text())
    return ASRTrainConfig(**{**OLD_DEFAULTS, **saved["config"], **(overrides or {})}), saved


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
    (features, mask) on a CPU run and (padded waveforms, lengths) on a GPU run (see `train_step`)."""

    def __init__(self, sentences, tokenizer, cfg: ASRTrainConfig, epoch_seed: int, words: dict[str, float] | None = None):
        self.sentences, self.tok, self.cfg, self.epoch_seed = sentences, tokenizer, cfg, epoch_seed
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

        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.cfg.seed}-{self.epoch_seed}-{info.id if info else 0}")
        nprng = np.random.default_rng(rng.randrange(2**32))
        fe = ParakeetFeatureExtractor()
        cfg = self.cfg
        mix, levers = VoiceMix.parse(cfg.voices), Levers.parse(cfg.augment)
        lever_rng = random.Random(f"{cfg.seed}-{self.epoch_seed}-augment-{info.id if info else 0}")
        while True:
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
            # main process does, on the GPU, where they cost ~nothing (in a worker they took ~3/4 of
            # its time: measured 0.8 s of features against 0.3 s of espeak for 64 utterances)
            audio = log_mel(fe, waves, lengths) if cfg.device == "cpu" else (waves, lengths)
            yield audio, labels, float(lengths.sum()) / 16000


def spec_augment(x: torch.Tensor, mask: torch.Tensor, cfg: ASRTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Frequency and time masking on (B, T, F) features (set to zero, the mean after normalisation):
    `freq_masks` bands of 0..`freq_mask_width` mel bins and `time_masks` spans of up to
    `time_mask_frac` of each utterance's frames. The random draws come from the CPU generator `g`;
    the masking runs on the features' device in a few vectorised operations."""
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
    return cfg.lr * warmup_cosine(step, cfg.warmup, cfg.steps, 0.05, start)


def train_step(model, opt, batch, lr: float, cfg: ASRTrainConfig, g: torch.Generator, fe=None) -> float:
    """One optimisation step on an (audio, labels) batch, where audio is (features, mask) or, for a GPU
    run, (waveforms, lengths) that `fe` turns into features on the GPU; returns the CTC loss."""
    audio, labels = batch
    for group in opt.param_groups:
        group["lr"] = lr
    dev = model.device
    if fe is not None:
        feats, mask = log_mel(fe, audio[0].to(dev, non_blocking=True), audio[1])
    else:
        feats, mask = (t.to(dev) for t in audio)
    feats = spec_augment(feats, mask, cfg, g)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):  # the CTC loss itself stays fp32
        loss = model(input_features=feats, attention_mask=mask, labels=labels.to(dev)).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return loss.item()


def evaluate(asr, dev) -> float:
    """Dev WER of `asr` on the (text, voice) pairs of `dev`, as the `asr` task scores it."""
    from bench.textnorm import wer
    from bench.tts import synthesize

    audios = [synthesize(t, v) for t, v in dev]
    hyps = asr.transcribe(audios)
    return wer([t for t, _ in dev], hyps)


def save_checkpoint(out: Path, asr, opt, step: int, cfg: ASRTrainConfig, log_tail: dict, start: int = 0) -> None:
    """Atomic: written to a temporary folder, then swapped in for the previous checkpoint."""
    tmp = out / "ckpt.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    asr.save_pretrained(tmp)
    torch.save({"optimizer": opt.state_dict(), "step": step}, tmp / "trainer_state.pt")
    (tmp / "train_config.json").write_text(json.dumps({"config": asdict(cfg), "step": step, "start_step": start,
                                                             **log_tail}, indent=1))
    replace_dir(tmp, out / "ckpt")


def train(cfg: ASRTrainConfig, out: Path, max_minutes: float | None = None, progress: bool = True,
          init_from: Path | None = None, given: tuple[str, ...] = (), fit_steps: bool = False) -> dict:
    """Train into `out`, resuming from `out/ckpt` if it exists; else, with `init_from` (an exported
    model directory holding train_config.json), continue from those weights and that step with a
    fresh optimiser, warmed up again over `warmup` steps (how a new machine carries on from the
    committed checkpoint). Either way the saved config is kept except for RUN_OPTIONS and the
    options named in `given` (those the user typed; never the architecture). With `fit_steps` and
    `max_minutes`, `steps` is lowered after 300 steps to what the measured speed fits in the time
    left, so the learning-rate schedule ends when the time does (the checkpoint records the result)."""
    from systems.asr.ctc import CTCASR, train_tokenizer

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    sentences = corpus(cfg)
    dev = dev_set(cfg)
    dev_texts = {t for t, _ in dev}
    sentences = [s for s in sentences if s not in dev_texts]
    ckpt = out / "ckpt"
    keep = set(RUN_OPTIONS) | set(given) - set(ARCHITECTURE)
    typed = {k: v for k, v in asdict(cfg).items() if k in keep}
    start = 0
    if (ckpt / "trainer_state.pt").exists():
        asr = CTCASR.from_pretrained(ckpt)
        asr.model.train()
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True, map_location="cpu")
        step = int(state["step"])
        cfg, saved = saved_config(ckpt, typed)
        start = int(saved.get("start_step", 0))
        resume_log(out / "train_log.jsonl", step)
        print(f"resuming from step {step}", file=sys.stderr)
    elif init_from is not None:
        asr = CTCASR.from_pretrained(init_from, decoder="greedy")
        asr.lexicon = None  # dev WER during training is plain greedy, as in a run from scratch
        asr.model.train()
        cfg, saved = saved_config(init_from, typed)
        step, state = int(saved["step"]), None
        start = step
        print(f"continuing from {init_from} at step {step} (fresh optimiser, warm-up {cfg.warmup} steps)",
              file=sys.stderr)
    else:
        tok = train_tokenizer(sentences, cfg.vocab_size)
        asr = CTCASR.build(tok, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn, cfg.kernel, cfg.subsampling, cfg.dropout)
        state, step = None, 0
    model = asr.model.to(cfg.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    words = None
    if cfg.wordlist_frac > 0:
        from systems.asr.lm import english_word_frequencies
        words = english_word_frequencies(cfg.wordlist_top)
    stream = SpeechStream(sentences, asr.tokenizer, cfg, epoch_seed=step, words=words)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0,
                                         pin_memory=cfg.device != "cpu")
    g = torch.Generator().manual_seed(cfg.seed + step)
    log_path = out / "train_log.jsonl"
    t_start, seen_audio, losses = time.time(), 0.0, []
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, {len(sentences)} training sentences, {len(dev)} dev", file=sys.stderr)
    last, fit = {}, StepFitter(step, max_minutes, t_start, fit_steps)

    def log(evaluate_dev: bool) -> dict:
        entry = {"step": step, "loss": float(np.mean(losses)), "lr": lr_at(step, cfg, start),
                 "elapsed_s": round(time.time() - t_start, 1), "audio_h": round(seen_audio / 3600, 3)}
        losses.clear()
        if evaluate_dev:
            entry["dev_wer"] = evaluate(asr, dev)
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if progress:
            print(json.dumps(entry), file=sys.stderr, flush=True)
        return entry

    fe = None if cfg.device == "cpu" else asr.fe
    for audio, labels, secs in loader:
        if step >= cfg.steps or (max_minutes and time.time() - t_start > 60 * max_minutes):
            break
        losses.append(train_step(model, opt, (audio, labels), lr_at(step, cfg, start), cfg, g, fe))
        step += 1
        seen_audio += secs
        cfg.steps = fit(step, cfg.steps)
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = log(step % cfg.eval_every == 0 or step == cfg.steps)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(out, asr, opt, step, cfg, last, start)
    if losses:  # stopped by the clock between two log lines: log (and measure) where it stopped
        last = log(True)
    save_checkpoint(out, asr, opt, step, cfg, last, start)
    return {"step": step, **last}


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
        shutil.copy(out / "ckpt" / "train_config.json", Path(args.export) / "train_config.json")
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
