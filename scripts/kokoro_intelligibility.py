"""Intelligibility of the Kokoro engine: Whisper-base's WER on sentences spoken by each of its five pure
styles (en-us, speed 1.0), with a 95 % bootstrap interval over sentences, and espeak's en-us beside it.

    python scripts/kokoro_intelligibility.py [--sentences 100] [--split test]

The sentences are the built-in ASR task's (`corpus`, the given split); they are evaluation text, read here
only to measure the engine, never to train. Clips are cached like every other clip.
"""
import argparse

import numpy as np

from bench.kokoro_tts import STYLES, KokoroVoice, speak
from bench.stats import resample_counts
from bench.textnorm import error_counts
from bench.tts import Voice, synthesize
from corpus import normalize, split_rows
from systems.asr.whisper import WhisperASR


def corpus_wer(refs, hyps, boots: int = 1000) -> tuple[float, float, float]:
    counts = np.array([error_counts(h, r) for r, h in zip(refs, hyps)], dtype=float)  # (errors, words) per sentence
    w = resample_counts(len(counts), boots, seed=0)  # (boots, n) how often each sentence is drawn
    stats = w @ counts
    rates = stats[:, 0] / np.maximum(stats[:, 1], 1)
    lo, hi = np.quantile(rates, [0.025, 0.975])
    return counts[:, 0].sum() / counts[:, 1].sum(), lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    refs = [normalize(r["text"]) for r in split_rows("asr", args.split)][: args.sentences]
    asr = WhisperASR.load()
    print(f"Whisper-base WER on {len(refs)} `asr` {args.split} sentences (95 % bootstrap CI over sentences)\n")
    print("| voice | WER | 95 % CI |\n|---|---|---|")
    voices = [(f"kokoro {s} (en-us, 1.0)", lambda t, s=s: speak(t, KokoroVoice(((s, 1.0),)))) for s in STYLES]
    voices.append(("espeak en-us (175 wpm)", lambda t: synthesize(t, Voice("en-us"))))
    for name, say in voices:
        hyps = asr.transcribe([say(t) for t in refs])
        w, lo, hi = corpus_wer(refs, hyps)
        print(f"| {name} | {100 * w:.1f} % | [{100 * lo:.1f}, {100 * hi:.1f}] |", flush=True)


if __name__ == "__main__":
    main()
