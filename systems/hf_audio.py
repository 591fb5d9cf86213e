"""Audio LLMs from transformers as systems: `hf-audio:MODEL`, where MODEL is a model id or a local
directory of any class transformers loads with `AutoModelForMultimodalLM` and `AutoProcessor`
(Qwen2-Audio, Voxtral, Granite Speech, ...), driven by the model's own processor and chat template.

One switch gives the paper's other two rows for the same model, so a model nobody here trained gets
the full comparison:

    hf-audio:MODEL                the model hears each spoken turn (the end-to-end row)
    hf-audio:MODEL+text           the same model reads the gold transcript, no audio (its text topline)
    hf-audio:MODEL+asr=SYSTEM     SYSTEM's transcript → the same model as text (its cascade); SYSTEM is
                                  any system whose `Generation.transcript` reads the speech (`whisper`,
                                  `ctc`, `tokens` are short for cascade-whisper, cascade, cascade-tokens)

The three share one loaded model. Batched greedy decoding with left padding; safetensors only;
`trust_remote_code` only when the run sets it. The fingerprint hashes the model directory's files
(weights, processor and tokenizer configs, chat template), the dtype, the mode (with the ASR
system's own fingerprint) and the decoding config.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.plugins import Context, build_system, family
from bench.types import Audio, Generation, Request, System, TokenLogProbs
from systems.common import DecodeConfig, cut_at_eos, cut_at_stop, decode_config, inference_mode, resolve_model_dir, to_messages
from systems.common import trim_ids

ASR_SHORTHANDS = {"whisper": "cascade-whisper", "ctc": "cascade", "tokens": "cascade-tokens"}
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken"]


@dataclass(frozen=True)
class Spec:
    """A parsed `hf-audio` argument: the model, and which row of the comparison (audio, text, asr)."""

    model: str
    mode: str = "audio"
    asr: str | None = None

    @classmethod
    def parse(cls, arg: str) -> "Spec":
        model, *suffixes = arg.split("+")
        if not model:
            raise ValueError(f"hf-audio:{arg}: name a model id or directory first (hf-audio:MODEL[+text|+asr=SYSTEM])")
        if not suffixes:
            return cls(model)
        if len(suffixes) > 1:
            raise ValueError(f"hf-audio:{arg}: one of +text or +asr=SYSTEM at most")
        key, eq, value = suffixes[0].partition("=")
        if key == "text" and not eq:
            return cls(model, "text")
        if key == "asr" and value:
            return cls(model, "asr", ASR_SHORTHANDS.get(value, value))
        raise ValueError(f"hf-audio:{arg}: unknown suffix +{suffixes[0]}; use +text or +asr=SYSTEM")


def resolve_model(spec: str, trust_remote_code: bool = False) -> tuple[Path, str]:
    """(local directory, identity) of a model id or directory; the identity hashes its files."""
    return resolve_model_dir(spec, f"hf-audio:{spec}", HUB_FILES + (["*.py"] if trust_remote_code else []))


class GraniteMel:
    """Granite Speech's log-mel features without torchaudio (which cannot be installed beside this
    project's CPU torch): torchaudio.transforms.MelSpectrogram's defaults (hann window, centred
    reflect-padded STFT, power 2, HTK mel scale, no filter norm), computed with torch.stft."""

    def __init__(self, sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80):  # torchaudio's names
        import torch
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.window = torch.hann_window(win_length)
        self.fbank = torch.from_numpy(mel_filter_bank(n_fft // 2 + 1, n_mels, 0.0, sample_rate / 2, sample_rate,
                                                      norm=None, mel_scale="htk")).float()  # (F, M)

    def to(self, device):
        self.window, self.fbank = self.window.to(device), self.fbank.to(device)
        return self

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:  # (B, S) → (B, M, T)
        import torch

        spec = torch.stft(audio, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)  # (B, F, T)
        return torch.einsum("bft,fm->bmt", spec, self.fbank)


def _granite_processor(path: Path, trust_remote_code: bool):
    """Granite Speech's own processor, its feature extractor computing the mel spectrogram with
    `GraniteMel` when torchaudio is missing (the class insists on torchaudio for that one step)."""
    from transformers import AutoProcessor, AutoTokenizer, GraniteSpeechFeatureExtractor, GraniteSpeechProcessor
    from transformers.utils import is_torchaudio_available

    if is_torchaudio_available():
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    import transformers.models.granite_speech.feature_extraction_granite_speech as module

    class Extractor(GraniteSpeechFeatureExtractor):
        def __init__(self, *args, **kwargs):
            with _torchaudio_check_off(module):
                super().__init__(*args, **kwargs)

        def __call__(self, *args, **kwargs):
            with _torchaudio_check_off(module):
                return super().__call__(*args, **kwargs)

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    template = path / "chat_template.jinja"
    return GraniteSpeechProcessor(Extractor.from_pretrained(path), tok,
                                  chat_template=template.read_text() if template.exists() else tok.chat_template)


@contextlib.contextmanager
def _torchaudio_check_off(module):
    """Within the block, `module` builds its mel spectrogram with GraniteMel instead of torchaudio."""
    saved = module.requires_backends, getattr(module, "torchaudio", None)
    module.requires_backends = lambda obj, backends: None
    module.torchaudio = type("torchaudio", (), {"transforms": type("transforms", (), {"MelSpectrogram": GraniteMel})})
    try:
        yield
    finally:
        module.requires_backends = saved[0]
        if saved[1] is None:
            del module.torchaudio
        else:
            module.torchaudio = saved[1]


class HFAudioLLM:
    """One transformers audio LLM and its processor, loaded on first use (a fully cached run needs
    only the identity) and shared by the audio, +text and +asr systems of the same model."""

    def __init__(self, spec: str, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False):
        self.spec, self.dtype, self.device, self.trust = spec, dtype, device, trust_remote_code
        self.path, ident = resolve_model(spec, trust_remote_code)
        self.identity = f"{ident}:{dtype}"
        self._model = self._processor = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForMultimodalLM, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model_type = json.loads((self.path / "config.json").read_text()).get("model_type")
        if model_type == "granite_speech":
            processor = _granite_processor(self.path, self.trust)
        else:
            processor = AutoProcessor.from_pretrained(self.path, trust_remote_code=self.trust)
        if not hasattr(processor, "tokenizer") or not (processor.chat_template or processor.tokenizer.chat_template):
            raise ValueError(f"hf-audio:{self.spec}: its processor has no tokenizer with a chat template; an "
                             "instruction-tuned audio LLM (with chat_template.jinja or chat_template.json) is needed")
        processor.tokenizer.padding_side = "left"  # generation continues every row at the same position
        model = AutoModelForMultimodalLM.from_pretrained(self.path, dtype=getattr(torch, self.dtype),
                                                         use_safetensors=True, trust_remote_code=self.trust)
        self._model, self._processor = model.to(self.device).eval(), processor
        tok = processor.tokenizer
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = sorted({*eos, tok.eos_token_id} - {None})
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0]
        self.audio_blocks = self._template_takes_audio_blocks()

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._load()
        return self._processor

    @property
    def sampling_rate(self) -> int:
        p = self.processor  # (Granite calls its feature extractor `audio_processor`)
        return int(getattr(getattr(p, "feature_extractor", None) or getattr(p, "audio_processor", None),
                           "sampling_rate", 16000))

    def _template_takes_audio_blocks(self) -> bool:
        """Whether the chat template renders `{"type": "audio"}` content itself (Qwen2-Audio, Voxtral);
        else the audio token goes into the user's text (Granite Speech)."""
        probe = [{"role": "user", "content": [{"type": "audio", "audio": "probe"}]}]
        token = getattr(self._processor, "audio_token", None)
        if not self._own_chat_template():
            return True  # the processor's tokenizer renders audio itself (mistral-common for Voxtral)
        try:
            text = self._processor.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        except Exception:  # a template that cannot iterate a content list
            return False
        return bool(token) and token in text

    def _own_chat_template(self) -> bool:
        from transformers.processing_utils import ProcessorMixin

        return type(self._processor).apply_chat_template is ProcessorMixin.apply_chat_template

    def _audio(self, audio: Audio) -> np.ndarray:
        if audio.sample_rate == self.sampling_rate:
            return audio.samples
        from bench.audio import resample

        return resample(audio.samples, audio.sample_rate, self.sampling_rate)

    def user_content(self, audio: Audio):
        """A spoken user turn's content, in the form this model's template and processor expect."""
        samples = self._audio(audio)
        if not self.audio_blocks:
            return self.processor.audio_token
        if not self._own_chat_template():  # Voxtral: its tokenizer reads audio from a base64 wav
            import soundfile as sf

            buf = io.BytesIO()
            sf.write(buf, samples, self.sampling_rate, format="WAV")
            return [{"type": "audio", "base64": base64.b64encode(buf.getvalue()).decode()}]
        return [{"type": "audio", "audio": samples}]

    def inputs(self, conversations: list[list[dict]]) -> dict:
        """Model inputs for a batch of conversations (left-padded), ending with the assistant cue."""
        import torch

        p = self.processor
        if not self._own_chat_template():  # Voxtral: tokenizer and audio in one call
            out = p.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt", padding=True)
        else:
            audios = [a for conv in conversations for a in _audios(conv)]
            texts = p.apply_chat_template([[_for_template(m) for m in c] for c in conversations], tokenize=False,
                                          add_generation_prompt=True)
            bos = p.tokenizer.bos_token
            kwargs = {"add_special_tokens": not (bos and all(t.startswith(bos) for t in texts))}  # no second BOS
            if audios:
                kwargs["sampling_rate"] = self.sampling_rate
            out = p(text=texts, audio=audios or None, padding=True, return_tensors="pt", **kwargs)
        drop = set(getattr(p, "unused_input_names", None) or [])
        return {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in out.items() if k not in drop}

    @inference_mode
    def generate(self, conversations: list[list[dict]], cfgs: Sequence[DecodeConfig]) -> list[tuple[str, int]]:
        """Greedy answers, each under its own config (answer length, stop strings): [(text, number of
        generated tokens)]."""
        if not conversations:
            return []
        x = self.inputs(conversations)
        out = self.model.generate(**x, max_new_tokens=max(c.max_new_tokens for c in cfgs), do_sample=False,
                                  num_beams=1, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                                  temperature=None, top_p=None, top_k=None)
        new = cut_at_eos(out[:, x["input_ids"].shape[1]:], self.eos_ids)
        tok = self.processor.tokenizer
        answers = []
        for ids, cfg in zip(new, cfgs):
            ids = trim_ids(ids, cfg, lambda t: tok.decode(t, skip_special_tokens=True))
            text = tok.decode(ids, skip_special_tokens=True)
            cut = cut_at_stop(text, cfg.stop) if cfg.stop else None
            answers.append(((text if cut is None else cut).strip(), len(ids)))
        return answers

    @inference_mode
    def logprobs(self, conversation: list[dict], target: str) -> TokenLogProbs:
        """Teacher-forced log-probabilities of `target` (then the end-of-turn token) as the answer."""
        import torch

        x = self.inputs([conversation])
        tgt = self.processor.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.eos_ids[0]]
        t = torch.tensor([tgt], device=self.device)
        n = x["input_ids"].shape[1]
        x = {**x, "input_ids": torch.cat([x["input_ids"], t], 1),
             "attention_mask": torch.cat([x["attention_mask"], torch.ones_like(t)], 1)}
        logp = torch.log_softmax(self.model(**x).logits[0, n - 1: n - 1 + len(tgt)].float(), -1)
        return TokenLogProbs(tuple(logp.gather(1, t[0][:, None]).squeeze(1).tolist()))


def _audios(conv: list[dict]) -> list[np.ndarray]:
    """The audio of a conversation in order: in content blocks, or beside a text placeholder."""
    out = []
    for m in conv:
        if "audio" in m:
            out.append(m["audio"])
        elif not isinstance(m["content"], str):
            out.extend(b["audio"] for b in m["content"] if b.get("type") == "audio" and "audio" in b)
    return out


def _for_template(m: dict) -> dict:
    """A message as the template renders it (no arrays: they go to the processor apart)."""
    content = m["content"]
    if not isinstance(content, str):
        # the key stays (templates test `'audio' in content`), the samples go to the processor
        content = [{**b, "audio": "(audio)"} if b.get("type") == "audio" else b for b in content]
    return {"role": m["role"], "content": content}


class HFAudioSystem(System):
    """One row of the comparison for a transformers audio LLM (see the module docstring)."""

    def __init__(self, llm: HFAudioLLM, spec: Spec, cfg: DecodeConfig = DecodeConfig(), asr: System | None = None):
        self.llm, self.spec, self.cfg, self.asr = llm, spec, cfg, asr
        self.name = f"hf-audio:{spec.model}" + {"audio": "", "text": "+text", "asr": f"+asr={spec.asr}"}[spec.mode]

    def fingerprint(self) -> str:
        from systems.cascade import TRANSCRIPT_WARNING

        blob = json.dumps({"class": "HFAudio/1", "model": self.llm.identity, "mode": self.spec.mode,
                           "asr": self.asr.fingerprint() if self.asr else None,
                           "warning": TRANSCRIPT_WARNING if self.asr else None, **self.cfg.as_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- what the model reads ----------------------------------------------------------------
    def _transcribe(self, requests: Sequence[Request]) -> tuple[dict[int, str], float]:
        """The ASR system's reading of every spoken user turn, in one batch: ({id(turn): text}, seconds)."""
        turns = [t for r in requests for t in (*r.history, r.turn) if t.role == "user" and isinstance(t.audio, Audio)]
        if not turns:
            return {}, 0.0
        t0 = time.perf_counter()
        gens = self.asr.generate_batch([Request(t, transcript_only=True) for t in turns])
        if any(g.transcript is None for g in gens):
            raise ValueError(f"{self.name}: system {self.spec.asr!r} gives no transcript; name an ASR system "
                             "(cascade-whisper, cascade, cascade-tokens, or another whose outputs carry one)")
        return {id(t): g.transcript for t, g in zip(turns, gens)}, time.perf_counter() - t0

    def _conversation(self, request: Request, hyps: dict[int, str]) -> list[dict]:
        from systems.cascade import TRANSCRIPT_WARNING

        if self.spec.mode == "text":
            return to_messages(request, lambda t: t.gold_text)
        if self.spec.mode == "asr":
            spoken = any(t.role == "user" and t.spoken for t in (*request.history, request.turn))
            return to_messages(request, lambda t: hyps[id(t)] if t.spoken else t.text,
                               TRANSCRIPT_WARNING if spoken else None)
        msgs = [{"role": "system", "content": request.instruction}] if request.instruction else []
        for t in (*request.history, request.turn):
            if t.role == "user" and t.spoken:
                if not isinstance(t.audio, Audio):
                    raise ValueError(f"{self.name} needs the audio of every spoken turn")
                msgs.append({"role": "user", "content": self.llm.user_content(t.audio)})
                if not self.llm.audio_blocks:
                    msgs[-1]["audio"] = self.llm._audio(t.audio)
            else:
                msgs.append({"role": t.role, "content": t.gold_text if t.role == "user" else t.text})
        return msgs

    # -- the contract ------------------------------------------------------------------------
    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        hyps, asr_secs = self._transcribe(requests) if self.spec.mode == "asr" else ({}, 0.0)
        # an ASR-only request to a reading row is answered by its transcript; the audio row has none
        # but its answer (the task's instruction asks it to transcribe)
        todo = [i for i, r in enumerate(requests) if not (r.transcript_only and self.spec.mode != "audio")]
        t0 = time.perf_counter()
        answers = dict(zip(todo, self.llm.generate([self._conversation(requests[i], hyps) for i in todo],
                                                   [self.cfg.for_request(requests[i]) for i in todo])))
        per = (time.perf_counter() - t0) / max(len(todo), 1)
        n = max(len(requests), 1)
        out = []
        for i, r in enumerate(requests):
            transcript = (hyps.get(id(r.turn)) if self.spec.mode == "asr" else
                          r.turn.gold_text if self.spec.mode == "text" and r.turn.spoken else None)
            text, tokens = answers.get(i, (transcript or "", 0))
            seconds = {"llm": per if i in answers else 0.0}
            if self.spec.mode == "asr":
                seconds["asr"] = asr_secs / n
            if isinstance(r.turn.audio, Audio):
                seconds["audio"] = r.turn.audio.seconds
            out.append(Generation(text=text, transcript=transcript, tokens=tokens, seconds=seconds))
        return out

    def score_batch(self, pairs: Sequence[tuple[Request, str]]) -> list[TokenLogProbs]:
        # one pair at a time: each target follows its own prompt (exact, if slower than a padded batch)
        hyps, _ = self._transcribe([r for r, _ in pairs]) if self.spec.mode == "asr" else ({}, 0.0)
        return [self.llm.logprobs(self._conversation(r, hyps), t) for r, t in pairs]


@family("MODEL[+text|+asr=SYSTEM]: a transformers audio LLM by id or directory (Qwen2-Audio, Voxtral, "
        "Granite Speech, ...); +text: the same model on the gold transcript (its topline); +asr=SYSTEM: "
        "SYSTEM's transcript → the same model (its cascade; whisper, ctc, tokens are short for the cascades)")
def build(ctx: Context, arg: str) -> HFAudioSystem:
    spec = Spec.parse(arg)
    dtype, device = ctx.options.get("dtype", "float32"), ctx.options.get("device", "cpu")
    trust = bool(ctx.options.get("trust_remote_code", False))
    llm = ctx.shared(f"hf-audio:{spec.model}:{dtype}:{device}:{trust}",
                     lambda: HFAudioLLM(spec.model, dtype, device, trust))
    asr = build_system(spec.asr, ctx) if spec.mode == "asr" else None
    return HFAudioSystem(llm, spec, decode_config(ctx), asr)
