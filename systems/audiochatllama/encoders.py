"""Audio encoders for AudioChatLlama. Each maps a batch of `Audio` to states (B, T, C) with valid
lengths (B,), and knows its frame period so the model can stack frames to ~80 ms."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from bench.types import Audio


class CTCEncoder(nn.Module):
    """The Conformer encoder of the project's CTC ASR (`ParakeetForCTC.encoder`), initialised from
    its trained checkpoint; its CTC head is dropped."""

    def __init__(self, asr):
        super().__init__()
        self.encoder = asr.model.encoder
        self.fe = asr.fe
        self.frame_ms = 10 * asr.model.config.encoder_config.subsampling_factor
        self.dim = asr.model.config.encoder_config.hidden_size
        self.source = asr.identity

    @classmethod
    def load(cls, path: str | Path) -> "CTCEncoder":
        """`path`: a CTC ASR directory; a relative one that is not under the working directory is
        taken from the repository root (checkpoint configs name `systems/checkpoints/...`)."""
        from systems.asr.ctc import CTCASR

        path = Path(path)
        if not path.is_absolute() and not path.exists():
            path = Path(__file__).resolve().parents[2] / path
        return cls(CTCASR.from_pretrained(path, decoder="greedy"))  # the encoder only: no LM to load

    def forward(self, audios: Sequence[Audio]) -> tuple[torch.Tensor, torch.Tensor]:
        from systems.asr.ctc import featurize

        dev = next(self.parameters()).device
        with torch.autocast(dev.type, enabled=False):  # features in float32, on the encoder's device
            feats, mask = featurize(self.fe, [a.samples for a in audios], dev)
        out = self.encoder(input_features=feats, attention_mask=mask, output_attention_mask=True)
        return out.last_hidden_state, out.attention_mask.sum(-1)  # (B, T, C), (B,)


class WhisperEncoder(nn.Module):
    """Whisper's encoder run on the real clip length (see systems/asr/whisper.py); 20 ms frames."""

    def __init__(self, whisper):
        super().__init__()
        self.whisper = whisper
        self.encoder = whisper.model.model.encoder
        self.frame_ms = 20
        self.dim = whisper.model.config.d_model
        self.source = whisper.identity

    @classmethod
    def load(cls, spec: str = "whisper-base") -> "WhisperEncoder":
        from systems.asr.whisper import WhisperASR

        return cls(WhisperASR.load(spec))

    def forward(self, audios: Sequence[Audio]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cpu", enabled=False):  # numpy feature extraction inside; the encoder is frozen
            states = self.whisper.encode(audios, min_seconds=1.0)  # no 8 s floor: lengths cut the padding
        lengths = torch.tensor([min(states.shape[1], int(a.seconds * 50) + 1) for a in audios])
        return states, lengths
