"""Recipe: `audiochat-bench train lm --model DIR`: build the word n-gram LM of a CTC ASR model
directory (DIR/lm.arpa.gz) from the text it was trained on, then tune the beam-search weights
(DIR/decoding.json) and the weight of the LLM second pass on the dev sentences in dev voices.

The LM and the beam search themselves are systems/asr/lm.py; this recipe also needs the ASR model
(systems/asr/ctc.py) and its training data (systems/asr/train.py), which is why it lives apart."""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
from pathlib import Path
from typing import Sequence

import torch

from bench.textnorm import item_wer, wer as corpus_wer
from bench.tts import synthesize
from systems.asr.ctc import CTCASR
from systems.asr.lm import BeamConfig, NgramLM, build_arpa, ctc_beam_search, ctc_pieces, english_word_frequencies
from systems.asr.rescore import LLMRescorer, RescoreConfig
from systems.asr.train import ASRTrainConfig, corpus, dev_set, saved_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="audiochat-bench train lm", description=(
        "Build the word n-gram LM of a CTC ASR model directory (DIR/lm.arpa.gz) from the text it was "
        "trained on (its train_config.json) plus the most frequent English words, then, with --tune, "
        "grid-search the beam-search weights on the dev sentences in dev voices (DIR/decoding.json)."))
    ap.add_argument("--model", required=True, help="exported ASR directory (holds train_config.json)")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--words", type=int, default=50000, help="English words added to the vocabulary (0: none)")
    ap.add_argument("--extra-weight", type=float, default=0.5, help="weight of the word-frequency list in the unigram mixture")
    ap.add_argument("--tune", action="store_true", help="tune the beam-search weights on the dev set and write "
                    "decoding.json, dropping any rescoring entry (the LM is built first only if DIR has none; "
                    "without --tune or --tune-rescore it is always rebuilt)")
    ap.add_argument("--tune-rescore", metavar="LLM", help="pick the weight of a second pass that rescores the "
                    "beam's N best with this chat LLM (e.g. smollm2), on the dev sentences in 4 draws of dev voices; "
                    "written into decoding.json (\"rescore\") where it lowers the dev WER")
    ap.add_argument("--beam", type=int, default=BeamConfig.beam)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    model = Path(args.model)
    path = model / "lm.arpa.gz"
    if not path.exists() or not (args.tune or args.tune_rescore):
        extra = english_word_frequencies(args.words) if args.words else None
        arpa = build_arpa(corpus(saved_config(model)[0]), order=args.order, extra_unigrams=extra,
                          extra_weight=args.extra_weight)
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
            f.write(arpa)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.tune:
        best = tune(model, args.beam, args.threads)
        print(json.dumps(best))
    if args.tune_rescore:
        print(json.dumps(tune_rescore(model, args.tune_rescore, args.threads)))
    return 0


def tune(model: Path, beam: int, threads: int) -> dict:
    """Grid-search alpha and beta by dev WER (the authored dev sentences in dev voices; never test)."""
    torch.set_num_threads(threads)
    (model / "decoding.json").unlink(missing_ok=True)
    asr = CTCASR.from_pretrained(model)
    dev = dev_set(ASRTrainConfig())
    refs = [t for t, _ in dev]
    logps = asr.log_probs([synthesize(t, v) for t, v in dev])
    wer = lambda hyps: corpus_wer(refs, hyps)
    rows = [{"decoder": "greedy", "wer": wer(asr.decode_greedy(logps))}]
    lm = NgramLM.load(model / "lm.arpa.gz")
    for alpha, beta, pen in itertools.product((0.2, 0.3, 0.4, 0.5, 0.7), (-1.0, 0.0, 1.0, 2.0),
                                              (-6.0, -10.0, -15.0, -25.0)):
        cfg = BeamConfig(beam=beam, alpha=alpha, beta=beta, partial_penalty=pen)
        rows.append({"decoder": "beam", **cfg.as_dict(), "wer": wer(asr.decode_beam(logps, lm, cfg))})
        print(json.dumps(rows[-1]), flush=True)
    best = min((r for r in rows if r["decoder"] == "beam"), key=lambda r: r["wer"])
    (model / "decoding.json").write_text(json.dumps({
        "decoder": "beam", "lm": "lm.arpa.gz", **{k: best[k] for k in BeamConfig().as_dict()},
        "tuned_on": f"{len(dev)} authored dev sentences in dev voices", "dev_wer": best["wer"],
        "dev_wer_greedy": rows[0]["wer"]}, indent=1) + "\n")
    return best


def tune_rescore(model: Path, llm: str, threads: int, nbest: int = 16,
                 weights: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)) -> dict:
    """Pick the LLM rescoring weight by WER on the dev sentences in 4 draws of dev voices (never
    test); record it in decoding.json where it beats plain beam search, else remove the entry."""
    torch.set_num_threads(threads)
    spec = model / "decoding.json"
    if not spec.exists():
        raise FileNotFoundError(f"{spec} not found: run `audiochat-bench train lm --model {model} --tune` first")
    asr = CTCASR.from_pretrained(model, decoder="beam")
    dev = dev_set(ASRTrainConfig(), draws=4)
    refs = [t for t, _ in dev]
    pieces = ctc_pieces(asr.tokenizer)
    lists = [ctc_beam_search(lp, pieces, asr.blank, asr.lm, asr.beam, nbest=nbest)
             for lp in asr.log_probs([synthesize(t, v) for t, v in dev])]
    rescorer = LLMRescorer(RescoreConfig(llm=llm, nbest=nbest))
    lm_logp = rescorer.log_probs([[t for t, _ in n] for n in lists])
    wer = lambda hyps: corpus_wer(refs, hyps)
    rows = {w: wer(LLMRescorer.pick(lists, lm_logp, w)) for w in (0.0, *weights)}
    oracle = wer([min(n, key=lambda h: item_wer(h[0], r))[0] for r, n in zip(refs, lists)])
    best = min(weights, key=rows.get)
    conf = json.loads(spec.read_text())
    conf.pop("rescore", None)
    if rows[best] < rows[0.0]:
        conf["rescore"] = {**RescoreConfig(llm=llm, weight=best, nbest=nbest).as_dict(),
                           "tuned_on": f"{len(dev)} utterances: the dev sentences in 4 draws of dev voices",
                           "dev_wer": rows[best], "dev_wer_without": rows[0.0], f"dev_wer_oracle_of_{nbest}": oracle}
    spec.write_text(json.dumps(conf, indent=1) + "\n")
    return {"weights": {str(w): round(v, 4) for w, v in rows.items()}, "oracle": oracle, "chosen": conf.get("rescore")}
