"""Turn data on disk into `Item`s: a JSONL manifest for your own data, and readers for public sets.

Nothing here reads audio while listing: every audio file or text to speak becomes an `AudioRef`,
loaded only when the runner materialises the item, so one corrupt file fails only its own item.

JSONL manifest (`read_manifest`)
--------------------------------
UTF-8, one JSON object per line; blank lines are skipped. Keys of a line (any other key is an error,
so that a typo such as "refrences" does not silently drop your references):

  "id"           required, non-empty string, unique in the file
  the user's current turn, exactly one of:
    "audio"      path of an audio file (wav/flac/ogg, any rate, channels and bit depth), relative to
                 the root (default: the manifest's folder) or absolute; it must resolve, symlinks
                 followed, inside the root unless `allow_outside_root=True`
    "tts"        text to speak with the built-in espeak-ng TTS; optional "voice" (e.g. "en-us+f3",
                 see `bench.tts.voices`), "rate" (words per minute, int) and "pitch" (0-100, int);
                 without "voice" a held-out voice of `split_voice` is drawn from the item id
    "text"       a typed turn (no audio)
  "transcript"   gold text of a spoken turn, read only by the text topline. Optional with "audio"
                 (null or absent: unknown); with "tts" it defaults to the spoken text, so give it
                 only where the two differ (text spelled for pronunciation). Not allowed with "text"
  "history"      earlier turns, oldest first: objects with "role" ("user" or "assistant") and the
                 turn keys above; assistant turns are typed ("text" only). Default []
  "instruction"  string or null: the system prompt every system receives. Default null
  "references"   list of strings: gold answers (any one may match). Default [] (scoring decides)
  "meta"         object, passed through untouched. Default {}
  "kind"         optional, what the items are scored as (see below); the same on every line that has it
  "target"       the target language code of a "translate" manifest ("de", "fr", ...; see LANGUAGE_NAMES)

Kinds (`KINDS`): the first non-blank line may instead be a header naming the kind of every item,
`{"kind": "asr"}` or `{"kind": "translate", "target": "de"}` (no "id"). A manifest without a kind is
"qa" (its items are used exactly as written, as before kinds existed). With an explicit kind, a line
without "instruction" gets that kind's default instruction (`KIND_INSTRUCTIONS`; `"instruction": null`
means none), and:
  qa         short answers: "references" are the gold answers (accuracy, EM, F1, agreement)
  asr        a spoken turn ("audio"/"tts"); "references" default to ["<transcript>"]: corpus WER/CER
  translate  a spoken turn and reference translation(s): corpus BLEU/chrF (sacrebleu)
  summarize  reference summaries: ROUGE-1/2/L (and a judge, when one is named)
  open       open-ended requests; "references" optional: agreement with the topline (and a judge)
A manifest with no items is an error.

Example lines:
  {"id": "q1", "audio": "clips/q1.wav", "transcript": "who wrote hamlet", "references": ["Shakespeare"]}
  {"id": "q2", "tts": "Who wrote Hamlet?", "voice": "en-us+f3", "rate": 160, "references": ["Shakespeare"]}
  {"id": "q3", "text": "And when?", "history": [{"role": "user", "tts": "Who wrote Hamlet?"},
   {"role": "assistant", "text": "Shakespeare."}], "instruction": "Answer briefly.", "references": ["1600"]}

Every spoken user turn of an item uses the same drawn voice (one speaker per conversation).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from bench.audio import load_audio
from bench.tts import Voice, synthesize
from bench.types import AudioRef, Item, Turn, first_n
from corpus import ASR_INSTRUCTION, QA_INSTRUCTION  # noqa: F401  (the recipes train under them too)

TRANSLATE_INSTRUCTION = "Translate what the user says into {language}. Reply with the translation only."
SQUAD_INSTRUCTION = "Answer the question using the passage, in as few words as possible.\n\nPassage: {context}"
SUMMARY_INSTRUCTION = "Summarize this in one sentence."
FLORES = {"en": ("eng_Latn", "English"), "fr": ("fra_Latn", "French"),
          "de": ("deu_Latn", "German"), "es": ("spa_Latn", "Spanish")}
JFK_PHRASES = ("my fellow americans", "your country", "do for you")
# target languages a manifest or benchmark may name: FLORES/the built-in suites' and CoVoST 2's en→x ones
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "ca": "Catalan", "zh": "Chinese",
                  "fa": "Persian", "et": "Estonian", "mn": "Mongolian", "tr": "Turkish", "ar": "Arabic",
                  "sv": "Swedish", "lv": "Latvian", "sl": "Slovenian", "ta": "Tamil", "ja": "Japanese",
                  "id": "Indonesian", "cy": "Welsh"}
KINDS = ("qa", "asr", "translate", "summarize", "open")
# the instruction every system gets when a line of a manifest with an explicit kind names none
KIND_INSTRUCTIONS = {"qa": QA_INSTRUCTION, "asr": ASR_INSTRUCTION, "translate": TRANSLATE_INSTRUCTION,
                     "summarize": SUMMARY_INSTRUCTION, "open": None}
SQUAD_FORMS = ("original", "human-transcribed", "machine-transcribed")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and what to fix."""


class ManifestError(DataError):
    """A manifest line is malformed; the message names the file, the line and what to fix."""


# ---------------------------------------------------------------- lazy audio
def file_ref(path: str | Path) -> AudioRef:
    """An audio file, read (and validated, resampled to 16 kHz mono) only on `.load()`."""
    # partial, not a lambda: binds the value now and keeps items picklable for worker processes
    return AudioRef(loader=partial(load_audio, Path(path)), origin=str(path))


def tts_ref(text: str, voice: Voice) -> AudioRef:
    """`text` spoken by `voice`, synthesised only on `.load()`."""
    return AudioRef(loader=partial(synthesize, text, voice),
                    origin=f"tts:{voice.name}:r{voice.rate}:p{voice.pitch}:{text[:40]!r}", voice=voice.name)


def _spoken(text: str, seed: str, split_voice: str) -> Turn:
    return Turn("user", audio=tts_ref(text, Voice.sample(split_voice, seed)), transcript=text)


def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    # not str.splitlines: it also splits at U+2028, U+0085..., which may sit inside a JSON string or
    # a sentence and would shift every later line of a line-aligned file
    return [l.removesuffix("\r") for l in path.read_text(encoding=encoding).split("\n")]


# ---------------------------------------------------------------- manifest
_TURN_KEYS = {"audio", "tts", "text", "transcript", "voice", "rate", "pitch"}
_LINE_KEYS = _TURN_KEYS | {"id", "history", "instruction", "references", "meta", "kind", "target"}
_HEADER_KEYS = {"kind", "target"}


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its items and what they are scored as (`kind`, and `target` for translate).
    `explicit`: the file named its kind (a manifest without one is "qa", read as before kinds)."""

    items: list[Item]
    kind: str = "qa"
    target: str | None = None
    explicit: bool = False


class _Line:
    """Parsing context of one manifest line: where it is, for error messages, and how to resolve."""

    def __init__(self, where: str, root: Path, allow_outside: bool, item_id: str, split_voice: str):
        self.where, self.root, self.allow_outside = where, root, allow_outside
        self.item_id, self.split_voice = item_id, split_voice

    def fail(self, message: str) -> ManifestError:
        return ManifestError(f"{self.where}: {message}")

    def path(self, value: str) -> Path:
        p = Path(value)
        try:
            resolved = (p if p.is_absolute() else self.root / p).resolve()  # follows symlinks and ".."
        except (OSError, ValueError, RuntimeError) as e:  # NUL byte, symlink loop
            raise self.fail(f"audio path {value!r} cannot be resolved ({e})") from None
        if not self.allow_outside and not resolved.is_relative_to(self.root):
            raise self.fail(f"audio path {value!r} resolves to {resolved}, outside the data root {self.root}; "
                            "move the file under the root, pass root=..., or pass allow_outside_root=True "
                            "if you trust this manifest")
        return resolved

    def turn(self, obj: Any, role: str, label: str) -> Turn:
        if not isinstance(obj, dict):
            raise self.fail(f"{label} must be a JSON object, got {type(obj).__name__}")
        allowed = _TURN_KEYS | ({"role"} if label != "the line" else _LINE_KEYS)
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(f"{label} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        kinds = [k for k in ("audio", "tts", "text") if k in obj]
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else "none"
            raise self.fail(f"{label} needs exactly one of \"audio\", \"tts\" or \"text\" (got {got})")
        kind, value = kinds[0], obj[kinds[0]]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{label}: \"{kind}\" must be a non-empty string")
        if role == "assistant" and kind != "text":
            raise self.fail(f"{label}: assistant turns are typed: use \"text\", not \"{kind}\"")
        transcript = obj.get("transcript")
        if transcript is not None and not isinstance(transcript, str):
            raise self.fail(f"{label}: \"transcript\" must be a string or null")
        voice_keys = sorted({"voice", "rate", "pitch"} & set(obj))
        if voice_keys and kind != "tts":
            raise self.fail(f"{label}: {voice_keys} only apply to \"tts\" turns")
        if kind == "text":
            if "transcript" in obj:
                raise self.fail(f"{label}: \"transcript\" is for spoken turns; a \"text\" turn is its own text")
            return Turn(role, text=value)
        if kind == "audio":
            return Turn(role, audio=file_ref(self.path(value)), transcript=transcript)
        return Turn(role, audio=tts_ref(value, self.voice(obj, label)),
                    transcript=value if transcript is None else transcript)

    def voice(self, obj: dict, label: str) -> Voice:
        voice = Voice.sample(self.split_voice, self.item_id)
        if "voice" in obj:
            if not isinstance(obj["voice"], str) or not obj["voice"]:
                raise self.fail(f"{label}: \"voice\" must be a voice name such as \"en-us+f3\"")
            voice = Voice(obj["voice"])  # an unknown name fails at synthesis, on this item only
        for key, lo, hi in (("rate", 80, 450), ("pitch", 0, 100)):
            if key in obj:
                v = obj[key]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise self.fail(f"{label}: \"{key}\" must be an integer from {lo} to {hi}, got {v!r}")
                voice = replace(voice, **{key: v})
        return voice


def read_manifest(path: str | Path, root: str | Path | None = None, allow_outside_root: bool = False,
                  split_voice: str = "test") -> list[Item]:
    """The items of a JSONL manifest (see `parse_manifest`, which also says their kind)."""
    return parse_manifest(path, root, allow_outside_root, split_voice).items


def _kind_of(obj: dict, where: str) -> tuple[str | None, str | None]:
    kind, target = obj.get("kind"), obj.get("target")
    if kind is None:
        if target is not None:
            raise ManifestError(f"{where}: \"target\" needs \"kind\": \"translate\"")
        return None, None
    if kind not in KINDS:
        raise ManifestError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "translate" and target not in LANGUAGE_NAMES:
        raise ManifestError(f"{where}: kind \"translate\" needs \"target\", a language code: one of "
                            f"{', '.join(LANGUAGE_NAMES)} (got {target!r})")
    if kind != "translate" and target is not None:
        raise ManifestError(f"{where}: \"target\" is only for kind \"translate\"")
    return kind, target


def parse_manifest(path: str | Path, root: str | Path | None = None, allow_outside_root: bool = False,
                   split_voice: str = "test") -> Manifest:
    """Read a JSONL manifest (format in the module docstring) into items and their kind, without
    reading audio.

    Audio paths resolve against `root` (default: the manifest's folder) and must stay inside it
    unless `allow_outside_root`. TTS turns without a voice get one of `split_voice`'s held-out
    voices, drawn from the item id. Raises `ManifestError` naming the line for any malformed line,
    for lines of different kinds, and for a manifest without items.
    """
    path = Path(path)
    try:
        lines = _lines(path, "utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest ({e})") from None
    base = (Path(root) if root is not None else path.parent).resolve()
    parsed: list[tuple[str, _Line, dict, Item]] = []
    seen: dict[str, int] = {}
    kind: tuple[str | None, str | None, int] = (None, None, 0)  # kind, target, line that named it
    for n, raw in enumerate(lines, 1):
        where = f"{path}:{n}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                                "each line must be one complete JSON object") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
        header = "id" not in obj and "kind" in obj
        if header and (parsed or kind[2]):
            raise ManifestError(f"{where}: a header line ({{\"kind\": ...}} without \"id\") may only be the "
                                "first line; give this line an \"id\"")
        if header and set(obj) - _HEADER_KEYS:
            raise ManifestError(f"{where}: the header line has unknown key(s) {sorted(set(obj) - _HEADER_KEYS)}; "
                                f"allowed: {sorted(_HEADER_KEYS)}")
        line_kind = _kind_of(obj, where)
        if line_kind[0] is not None:
            if kind[2] and line_kind != kind[:2]:
                raise ManifestError(f"{where}: kind {line_kind[0]!r}{f' ({line_kind[1]})' if line_kind[1] else ''} "
                                    f"differs from {kind[0]!r} on line {kind[2]}; a manifest has one kind: "
                                    "split it into one file per kind")
            kind = (*line_kind, kind[2] or n)
        if header:
            continue
        item_id = obj.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            raise ManifestError(f"{where}: \"id\" is missing or not a non-empty string; "
                                "give every line a unique string id")
        if item_id in seen:
            raise ManifestError(f"{where}: duplicate id {item_id!r} (first on line {seen[item_id]}); "
                                "ids must be unique")
        seen[item_id] = n
        line = _Line(where, base, allow_outside_root, item_id, split_voice)
        parsed.append((where, line, obj, _item(line, obj, item_id)))
    if not parsed:
        raise ManifestError(f"{path}: the manifest has no items; add one JSON object per line "
                            "(format: tasks/loaders.py)")
    if kind[0] is None:  # no kind: "qa", every item exactly as written (as before kinds existed)
        return Manifest([it for *_, it in parsed])
    return Manifest([_with_kind(line, obj, it, kind[0], kind[1]) for _, line, obj, it in parsed],
                    kind[0], kind[1], explicit=True)


def _item(line: _Line, obj: dict, item_id: str) -> Item:
    turn = line.turn(obj, "user", "the line")
    history = [] if obj.get("history") is None else obj["history"]
    if not isinstance(history, list):
        raise line.fail("\"history\" must be a list of turn objects")
    turns = []
    for i, h in enumerate(history):
        role = h.get("role") if isinstance(h, dict) else "user"  # a non-object fails in line.turn
        if role not in ("user", "assistant"):
            raise line.fail(f"history[{i}] has role {role!r}; use \"user\" or \"assistant\" "
                            "(put a system prompt in \"instruction\")")
        turns.append(line.turn(h, role, f"history[{i}]"))
    instruction = obj.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise line.fail("\"instruction\" must be a string or null")
    refs = [] if obj.get("references") is None else obj["references"]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise line.fail(f"\"references\" must be a list of strings, e.g. [\"Paris\"], got {refs!r}")
    meta = {} if obj.get("meta") is None else obj["meta"]
    if not isinstance(meta, dict):
        raise line.fail("\"meta\" must be a JSON object")
    return Item(item_id, turn, tuple(turns), instruction, tuple(refs), dict(meta))


def _with_kind(line: _Line, obj: dict, item: Item, kind: str, target: str | None) -> Item:
    """`item` checked against its manifest's kind, with the kind's default instruction and references."""
    instruction = item.instruction
    if "instruction" not in obj:
        default = KIND_INSTRUCTIONS[kind]
        instruction = default.format(language=LANGUAGE_NAMES[target]) if kind == "translate" else default
    refs = item.references
    if kind in ("asr", "translate") and not item.turn.spoken:
        raise line.fail(f"kind {kind!r} needs a spoken turn (\"audio\" or \"tts\"), not \"text\"")
    if kind == "asr" and not refs:
        if not item.turn.transcript:
            raise line.fail("kind \"asr\" needs the reference transcript: give \"transcript\" or \"references\"")
        refs = (item.turn.transcript,)
    if kind in ("asr", "translate", "summarize") and not refs:
        raise line.fail(f"kind {kind!r} needs \"references\" (a non-empty list of strings)")
    if kind == "asr" and len(refs) != 1:
        raise line.fail("kind \"asr\" takes exactly one reference transcript")
    return replace(item, instruction=instruction, references=refs)


# ---------------------------------------------------------------- public speech sets
def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing ({what})")
    return path


def _unique(items: list[Item], source: str | Path) -> list[Item]:
    ids = [it.id for it in items]  # ids key the result cache: a clash would serve one item's answer to another
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: duplicate item id {next(i for i in ids if ids.count(i) > 1)!r}")
    return items


def _audio_item(item_id: str, path: Path, transcript: str | None, references: Iterable[str],
                meta: dict, instruction: str | None = ASR_INSTRUCTION) -> Item:
    return Item(item_id, Turn("user", audio=file_ref(path), transcript=transcript),
                instruction=instruction, references=tuple(references), meta=meta)


def read_fleurs(dir: str | Path, lang: str = "en", target_lang: str | None = None,
                flores_dir: str | Path | None = None, limit: int | None = None) -> list[Item]:
    """FLEURS clips `fleurs-<lang>-NNN.ogg` with sibling `.txt` transcripts (lowercase, unpunctuated).

    ASR (`target_lang` None): references = the transcript. Translation: references = the
    FLORES-200 devtest line of `target_lang` that `fleurs_to_flores200_devtest.tsv` maps the clip
    to, read from `flores_dir` (default: `<dir>/../../text/flores200`, the shared-data layout).
    """
    d = Path(dir)
    clips = sorted(d.glob(f"fleurs-{lang}-*.ogg"))[:limit]
    if not clips:
        raise DataError(f"{d}: no fleurs-{lang}-*.ogg clips")
    tsv = d / "fleurs_to_flores200_devtest.tsv"
    rows = {}
    if tsv.exists():
        with tsv.open(encoding="utf-8", newline="") as f:
            rows = {r["audio"]: r for r in csv.DictReader(f, delimiter="\t")}
    target: list[str] | None = None
    if target_lang is not None:
        if target_lang == lang:
            raise ValueError(f"target_lang {target_lang!r} equals the source language")
        code, language = FLORES.get(target_lang, (target_lang, target_lang))
        fdir = Path(flores_dir) if flores_dir is not None else d.parent.parent / "text" / "flores200"
        target = _lines(_need(fdir / f"{code}.devtest", f"FLORES-200 devtest for {target_lang!r}; pass flores_dir="))
        _need(tsv, "clip → FLORES line map, needed for translation references")
    items = []
    for clip in clips:
        transcript = _need(clip.with_suffix(".txt"), "transcript of the clip").read_text(encoding="utf-8").strip()
        row = rows.get(clip.name)
        meta: dict[str, Any] = {"source": "fleurs", "lang": lang, "clip": clip.name}
        if row:
            meta.update(duration=float(row["duration_s"]), flores_line=int(row["flores_devtest_line_no"]),
                        flores_match=row["match"])
        if target is None:
            items.append(_audio_item(clip.stem, clip, transcript, [transcript], meta))
            continue
        if row is None:
            raise DataError(f"{tsv}: no row for {clip.name}; cannot find its translation")
        if not 1 <= meta["flores_line"] < len(target):
            raise DataError(f"{tsv}: {clip.name} maps to line {meta['flores_line']}, beyond the FLORES file")
        meta["target_lang"] = target_lang
        items.append(_audio_item(f"{clip.stem}-{target_lang}", clip, transcript,
                                 [target[meta["flores_line"] - 1].strip()], meta,
                                 TRANSLATE_INSTRUCTION.format(language=language)))
    return _unique(items, d)


def read_ljspeech(dir: str | Path, limit: int | None = None) -> list[Item]:
    """LJSpeech: `transcripts.tsv` (id TAB normalised text) with `<id>.flac` (or `.wav`, or
    `wavs/<id>.wav`) beside it. References = the transcript."""
    d = Path(dir)
    rows = [l.split("\t", 1) for l in _lines(_need(d / "transcripts.tsv", "id<TAB>text list")) if l.strip()]
    items = []
    for n, row in enumerate(rows, 1):
        if len(row) != 2 or not row[1].strip():
            raise DataError(f"{d}: transcript line {n} is not 'id<TAB>text'")
        clip_id, text = row[0].strip(), row[1].strip()
        path = next((p for p in (d / f"{clip_id}.flac", d / f"{clip_id}.wav", d / "wavs" / f"{clip_id}.wav")
                     if p.exists()), d / f"{clip_id}.flac")  # a missing file fails its own item on load
        items.append(_audio_item(f"ljspeech-{clip_id}", path, text, [text], {"source": "ljspeech", "clip": clip_id}))
    return _unique(first_n(items, limit), d)


_SPHINX = re.compile(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()\s]+)\)\s*$")


def read_librivox(dir: str | Path, limit: int | None = None) -> list[Item]:
    """LibriVox (pocketsphinx test data): the Sphinx `transcription` file, lines
    `<s> text </s> (utterance-id)`, with `<utterance-id>.wav` beside it. References = the text."""
    d = Path(dir)
    path = _need(d / "transcription", "Sphinx transcription file")
    items = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        m = _SPHINX.match(line.strip())
        if not m or not m.group(1):
            raise DataError(f"{path}:{n}: expected '<s> text </s> (utterance-id)'")
        text, utt = m.groups()
        items.append(_audio_item(f"librivox-{utt}", d / f"{utt}.wav", text, [text],
                                 {"source": "librivox", "clip": utt}))
    return _unique(first_n(items, limit), path)


def read_jfk(dir: str | Path, limit: int | None = None) -> list[Item]:
    """The JFK inaugural clip (44.1 kHz stereo 24-bit FLAC): no reference transcript exists, so
    references=() and transcript None; meta["expected_phrases"] lists phrases it must contain."""
    path = _need(Path(dir) / "jfk.flac", "the JFK clip")
    meta = {"source": "jfk", "expected_phrases": list(JFK_PHRASES)}
    return first_n([_audio_item("jfk", path, None, (), meta)], limit)
