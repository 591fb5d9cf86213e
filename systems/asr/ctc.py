"""A CTC Conformer ASR on transformers' `ParakeetForCTC`: 80-dim log-mel features
(`ParakeetFeatureExtractor`), a small BPE vocabulary with the CTC blank as padding token; greedy
CTC decoding (best token per frame, repeats merged, blanks dropped) or prefix beam search fused with
a word n-gram LM (systems/asr/lm.py).

The same class loads the project's own checkpoints and real ones in the `nvidia/parakeet-ctc-*`
layout (config.json + model.safetensors + tokenizer + preprocessor_config.json).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bench.profile import StageClock
from bench.types import Audio
from systems.common import inference_mode

BLANK = "<blank>"


def train_tokenizer(sentences: Sequence[str], vocab_size: int = 256):
    """A BPE tokenizer over normalised text (Metaspace word boundaries), blank at id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BLANK],
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz'▁"), show_progress=False)
    tk.train_from_iterator(sentences, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=BLANK)


def ctc_collapse(ids: Sequence[int], blank: int) -> list[int]:
    """Merge repeated tokens, then drop blanks: the CTC greedy decoding rule."""
    out, prev = [], None
    for t in ids:
        if t != prev and t != blank:
            out.append(t)
        prev = t
    return out


class Lexicon:
    """Snaps each out-of-vocabulary word of a hypothesis to the closest known word (difflib ratio
    ≥ `cutoff`, same first letter, length within 2). Character CTC errors are mostly near-phonetic
    misspellings (`experementl`), which this repairs without a language model."""

    def __init__(self, words: Sequence[str], cutoff: float = 0.75):
        self.words, self.cutoff = set(words), cutoff
        self.by_key: dict[tuple[str, int], list[str]] = {}
        for w in self.words:
            self.by_key.setdefault((w[0], len(w)), []).append(w)

    def __call__(self, text: str) -> str:
        import difflib

        out = []
        for w in text.split():
            if w in self.words or len(w) < 3:
                out.append(w)
                continue
            cands = [c for n in range(len(w) - 2, len(w) + 3) for c in self.by_key.get((w[0], n), ())]
            best = difflib.get_close_matches(w, cands, n=1, cutoff=self.cutoff)
            out.append(best[0] if best else w)
        return " ".join(out)


def log_mel(fe, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ParakeetFeatureExtractor(...)` on a padded (B, samples) batch, on the batch's device: pre-emphasis,
    log-mel (B, frames, 80), per-utterance normalisation over the valid frames; returns (features, mask).
    Equal to the extractor's own output (tested); transformers' `device=` argument cannot be used for
    this, since it leaves the waveforms on the CPU. On a GPU this costs ~nothing, where the extractor
    on one CPU core took 0.8 s for 64 utterances."""
    import torch

    dev = waves.device
    lengths = lengths.to(dev)
    valid = torch.arange(waves.shape[1], device=dev)[None] < lengths[:, None]
    x = waves
    if fe.preemphasis is not None:  # (a checkpoint's preprocessor config may switch it off)
        x = torch.cat([waves[:, :1], waves[:, 1:] - fe.preemphasis * waves[:, :-1]], dim=1)
    x = x.masked_fill(~valid, 0.0)
    feats = fe._torch_extract_fbank_features(x, dev)  # (B, frames, 80)
    n = torch.floor_divide(lengths + fe.n_fft // 2 * 2 - fe.n_fft, fe.hop_length)  # valid frames
    mask = torch.arange(feats.shape[1], device=dev)[None] < n[:, None]
    m = mask.unsqueeze(-1)
    mean = ((feats * m).sum(1) / n.unsqueeze(-1)).unsqueeze(1)
    std = torch.sqrt((((feats * m) - mean) ** 2 * m).sum(1) / (n - 1).unsqueeze(-1)).unsqueeze(1)
    return (feats - mean) / (std + 1e-5) * m, mask


def featurize(fe, samples: Sequence[np.ndarray], device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, frames, 80), mask (B, frames)) of a batch of 16 kHz waveforms, computed on `device`."""
    import torch

    waves = [torch.as_tensor(np.asarray(s, dtype=np.float32)) for s in samples]
    lengths = torch.tensor([w.numel() for w in waves])
    return log_mel(fe, torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(device), lengths)


def ctc_identity(path: Path, decoder: str = "auto") -> str:
    """What decides a CTC model's transcripts: its files (weights, tokenizer, lexicon, decoding.json,
    LM), the rescoring LLM's weights where decoding.json names one, and which of the decoding stages
    the directory offers are switched off."""
    import json

    from bench.assets import weights_identity
    from systems.common import resolve_llm

    spec = Path(path) / "decoding.json"
    conf = json.loads(spec.read_text()) if spec.exists() else {}
    ident = f"{Path(path).name}@{weights_identity(Path(path))}"
    if conf and decoder == "greedy":
        return ident + ";greedy"
    if "rescore" in conf:
        return ident + (";no-rescore" if decoder == "beam" else f";{resolve_llm(conf['rescore']['llm'])[1]}")
    return ident


class CTCASR:
    """Feature extractor + ParakeetForCTC + tokenizer, with batched transcription: beam search fused
    with a word LM where the directory has one (decoding.json), else greedy (out-of-vocabulary words
    snapped to `lexicon.txt` where present)."""

    def __init__(self, model, tokenizer, feature_extractor, identity: str = "unsaved", lexicon: Lexicon | None = None,
                 lm=None, beam=None, rescorer=None):
        self.model, self.tokenizer, self.fe = model, tokenizer, feature_extractor
        self.identity, self.lexicon, self.lm, self.beam, self.rescorer = identity, lexicon, lm, beam, rescorer

    @classmethod
    def build(cls, tokenizer, hidden: int = 192, layers: int = 6, heads: int = 4, ffn: int = 768,
              kernel: int = 15, subsampling: int = 8, dropout: float = 0.1) -> "CTCASR":
        from transformers import ParakeetCTCConfig, ParakeetEncoderConfig, ParakeetFeatureExtractor, ParakeetForCTC

        enc = ParakeetEncoderConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                    num_key_value_heads=heads, intermediate_size=ffn, conv_kernel_size=kernel,
                                    subsampling_factor=subsampling, subsampling_conv_channels=min(256, hidden),
                                    dropout=dropout, attention_dropout=dropout, activation_dropout=dropout,
                                    layerdrop=0.0)
        cfg = ParakeetCTCConfig(vocab_size=len(tokenizer), encoder_config=enc.to_dict(),
                                pad_token_id=tokenizer.pad_token_id, ctc_zero_infinity=True)
        return cls(ParakeetForCTC(cfg), tokenizer, ParakeetFeatureExtractor())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", decoder: str = "auto", llm=None) -> "CTCASR":
        """`decoder`: "auto" (what the directory's decoding.json says: beam search with its n-gram LM,
        then LLM rescoring of the N best where it has a "rescore" entry; greedy without the file),
        "greedy", or "beam" (beam search with the n-gram LM, no LLM rescoring). Files that change
        decoding (lexicon.txt, decoding.json, the LM) are hashed into the identity, so changing them
        changes cache keys. `llm`: a loaded ChatLLM that the rescoring pass uses instead of loading its
        own where it is the same model (the cascade passes its own LLM: one copy in memory)."""
        import json

        from transformers import AutoTokenizer, ParakeetFeatureExtractor, ParakeetForCTC

        from systems.asr.lm import BeamConfig, NgramLM
        from systems.asr.rescore import LLMRescorer, RescoreConfig

        path = Path(path)
        model = ParakeetForCTC.from_pretrained(path, use_safetensors=True).to(device).eval()
        tok = AutoTokenizer.from_pretrained(path)
        fe = ParakeetFeatureExtractor.from_pretrained(path)
        lex = path / "lexicon.txt"
        lexicon = Lexicon(lex.read_text().split()) if lex.exists() else None
        lm = beam = rescorer = None
        spec = path / "decoding.json"
        if decoder == "beam" and not spec.exists():
            raise FileNotFoundError(f"{spec} not found: build and tune an LM first "
                                    f"(`audiochat-bench train lm --model {path} --tune`)")
        if decoder != "greedy" and spec.exists():
            conf = json.loads(spec.read_text())
            lm = NgramLM.load(path / conf["lm"])
            beam = BeamConfig(**{k: conf[k] for k in BeamConfig().as_dict() if k in conf})
            if decoder == "auto" and "rescore" in conf:
                from systems.llm import ChatLLM

                rcfg = RescoreConfig(**{k: conf["rescore"][k] for k in RescoreConfig().as_dict()})
                own = ChatLLM.load(rcfg.llm, device=device)  # resolves the weights; loads them on first use
                rescorer = LLMRescorer(rcfg, llm=llm if llm is not None and llm.identity == own.identity else own)
        return cls(model, tok, fe, identity=ctc_identity(path, decoder), lexicon=lexicon, lm=lm, beam=beam,
                   rescorer=rescorer)

    def save_pretrained(self, path: str | Path, half: bool = False) -> None:
        """`half`: store the weights as float16 (half the size; they load as float32 again), for an
        exported model rather than a training checkpoint."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        if half:
            from systems.training import halve_safetensors

            halve_safetensors(path / "model.safetensors")
        self.tokenizer.save_pretrained(path)
        self.fe.save_pretrained(path)

    @property
    def blank(self) -> int:
        return self.model.config.pad_token_id

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def transcribe(self, audios: Sequence[Audio], batch_size: int = 16) -> list[str]:
        """Transcripts in input order: beam search with the directory's LM where it has one
        (decoding.json + lm.arpa.gz), else greedy CTC (snapped to lexicon.txt where present).
        `last_seconds`: the call's stages (encoder: features and network; decode; rescore)."""
        clock = StageClock()
        with clock("encoder"):
            logps = self.log_probs(audios, batch_size)
        if self.lm is not None:
            texts = self.decode_beam(logps, self.lm, self.beam, self.rescorer, clock)
        else:
            with clock("decode"):
                texts = self.decode_greedy(logps)
        self.last_seconds = clock.seconds
        return texts

    @inference_mode
    def log_probs(self, audios: Sequence[Audio], batch_size: int = 16) -> list[np.ndarray]:
        """Per utterance, the (frames, vocab) CTC log-probabilities, batched by length to waste
        little padding; returned in input order."""
        import torch

        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(audios)), key=lambda i: audios[i].samples.size)
        out: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(audios)
        dev = self.model.device
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                feats, mask = featurize(self.fe, [audios[i].samples for i in idx], dev)
                logits = self.model(input_features=feats, attention_mask=mask).logits
                lengths = self.model._get_output_attention_mask(mask, target_length=logits.shape[1]).sum(-1)
                logp = torch.log_softmax(logits.float(), -1).cpu().numpy()  # (B, T, V)
                for row, i in enumerate(idx):
                    out[i] = logp[row, : int(lengths[row])]
        finally:
            self.model.train(was_training)
        return out

    def decode_greedy(self, logps: Sequence[np.ndarray]) -> list[str]:
        """Best token per frame, repeats merged, blanks dropped; then the lexicon snap."""
        out = []
        for lp in logps:
            ids = ctc_collapse(lp.argmax(-1).tolist(), self.blank)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            out.append(self.lexicon(text) if self.lexicon else text)
        return out

    def decode_beam(self, logps: Sequence[np.ndarray], lm, cfg, rescorer=None, clock: StageClock | None = None) -> list[str]:
        """CTC prefix beam search fused with a word n-gram LM (systems/asr/lm.py); with `rescorer`,
        the N best of each utterance rescored by an LLM. `clock`: times the two as decode, rescore."""
        from systems.asr.lm import ctc_beam_search, ctc_pieces

        clock = clock or StageClock()
        pieces = ctc_pieces(self.tokenizer)
        with clock("decode"):
            if rescorer is None:
                return [ctc_beam_search(lp, pieces, self.blank, lm, cfg) for lp in logps]
            nbest = [ctc_beam_search(lp, pieces, self.blank, lm, cfg, nbest=rescorer.cfg.nbest) for lp in logps]
        with clock("rescore"):
            return rescorer(nbest)
