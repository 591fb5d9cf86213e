"""`audiochat-bench data ...`: synthesise, inspect and export the items of tasks."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bench.audio import write_audio
from bench.registry import parse_list
from bench.types import Audio, Item, Turn


def add_parser(sub) -> None:
    d = sub.add_parser("data", help="synthesise, inspect or export task items (audio, splits, voices)")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, about in (("synth", "speak every item with the TTS now (cached), and report TTS throughput"),
                        ("inspect", "items, durations, voices and turns per task"),
                        ("export", "write items as audio files + a JSONL manifest (readable by manifest:PATH)")):
        p = dsub.add_parser(name, help=about, description=about)
        p.add_argument("--tasks", default=None, help="comma-separated tasks (default: every built-in task)")
        p.add_argument("--split", default="test", choices=["train", "dev", "test"])
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--data-dir", default=None, help="local copies of public benchmarks (see `list`)")
        if name != "export":
            p.add_argument("--condition", default="clean",
                           help="speak the items under this condition first, e.g. voice-kokoro (Kokoro test voices) "
                                "or voice-joe (piper's evaluation voice); default: clean, as authored")
        if name == "export":
            p.add_argument("--out", required=True, help="folder to write <task>/<item>.wav and manifest.jsonl into "
                           "(several tasks: <task>/manifest.jsonl each, one kind per manifest)")
    from bench.plugins import data_tools

    for name in data_tools().names():  # plug-in data tools
        p = dsub.add_parser(name, help=f"{name} (`data {name} --help` for its options)", add_help=False)
        p.add_argument("args", nargs="...")


def _tasks(args):
    from bench.plugins import build_task, suites, task_data_kwargs

    # default: the default suite's tasks (those over optional public data or a file are named explicitly)
    names = parse_list(args.tasks) or suites()["default"]["tasks"]
    out = []
    for n in names:
        t = build_task(n, split=args.split, **task_data_kwargs(n, getattr(args, "data_dir", None)))
        out.append((n, t, t.items(args.limit)))
    return out


def _spoken_turns(item: Item) -> list[Turn]:
    return [t for t in (*item.history, item.turn) if t.audio is not None]


def cmd_data(args) -> int:
    builtin = {"synth": synth, "inspect": inspect, "export": export}
    if args.data_command in builtin:
        return builtin[args.data_command](args)
    from bench.plugins import data_tools

    return data_tools().get(args.data_command)(args.args)


def _voiced(item: Item, condition: str) -> Item:
    """The item's audio loaded, under `condition` (a voice condition re-speaks it)."""
    from bench.conditions import apply

    return apply(condition, item) if condition != "clean" else item.materialized()


def synth(args) -> int:
    from bench import tts
    from bench.voices import VOICE_CONDITIONS, engine

    total_audio, total_wall, failed = 0.0, 0.0, 0
    for name, task, items in _tasks(args):
        for it in tqdm(items, desc=name, unit="item", file=sys.stderr, leave=False):
            t0 = time.perf_counter()
            try:
                total_audio += sum(t.audio.seconds for t in _spoken_turns(_voiced(it, args.condition)))
            except Exception as e:
                failed += 1
                print(f"{name} · {it.id}: {e}", file=sys.stderr)
            total_wall += time.perf_counter() - t0
    family = VOICE_CONDITIONS.get(args.condition)
    version = f"{family} {engine(family).identity()}" if family else f"espeak-ng {tts.espeak_version()}"
    print(f"{total_audio:.1f} s of audio in {total_wall:.1f} s ({total_audio / max(total_wall, 1e-9):.1f}x real time,"
          f" cached where already synthesised; {version}); {failed} failed")
    return 0 if not failed else 1


def inspect(args) -> int:
    from bench.voices import family_of

    print("| task | split | condition | voice family | items | spoken turns | typed turns | audio (s) total | mean | max "
          "| voices | kind |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, task, items in _tasks(args):
        durations, voices, typed, spoken = [], set(), 0, 0
        for it in items:
            if args.condition != "clean":
                it = _voiced(it, args.condition)
            for t in (*it.history, it.turn):
                if t.role != "user":
                    continue
                if t.audio is None:
                    typed += 1
                    continue
                spoken += 1
                if getattr(t.audio, "voice", None):
                    voices.add(t.audio.voice)
                elif args.condition != "clean":  # re-spoken: the voice is the origin's head
                    voices.add(t.audio.origin.rsplit(":", 1)[0])
                a = t.audio.load() if not isinstance(t.audio, Audio) else t.audio
                durations.append(a.seconds)
        tot = sum(durations)
        print(f"| {name} | {args.split} | {args.condition} | {family_of(args.condition, items)} | {len(items)} | {spoken} "
              f"| {typed} | {tot:.1f} | "
              f"{tot / max(len(durations), 1):.1f} | {max(durations, default=0):.1f} | {len(voices)} | {_kind(task)} |")
    return 0


def _kind(task) -> str:
    from bench.plugins import task_kind

    kind, target = task_kind(task)
    return f"{kind} → {target}" if target else kind


def _turn_json(t: Turn, audio_path: str | None) -> dict:
    if t.role == "assistant" or t.audio is None:
        return {"role": t.role, "text": t.text}
    return {"role": t.role, "audio": audio_path, "transcript": t.transcript}


def export(args) -> int:
    """One manifest per task (its header line names the task's kind, so `manifest:PATH` scores it
    with the same metrics); with one task it is <out>/manifest.jsonl, else <out>/<task>/manifest.jsonl."""
    from bench.plugins import task_kind

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(args)
    n, written = 0, []
    for name, task, items in tasks:
        folder = out / _safe(name)
        folder.mkdir(exist_ok=True)
        path = out / "manifest.jsonl" if len(tasks) == 1 else folder / "manifest.jsonl"
        kind, target = task_kind(task)
        with open(path, "w") as f:
            f.write(json.dumps({"kind": kind, **({"target": target} if target else {})}) + "\n")
            for it in tqdm(items, desc=name, unit="item", file=sys.stderr, leave=False):
                it = it.materialized()
                paths = []
                for k, t in enumerate((*it.history, it.turn)):
                    if t.audio is not None:
                        wav = folder / f"{_safe(it.id)}-{k}.wav"
                        write_audio(wav, t.audio)
                        paths.append(str(wav.relative_to(path.parent)))
                    else:
                        paths.append(None)
                turn = _turn_json(it.turn, paths[-1])
                turn.pop("role")
                f.write(json.dumps({"id": it.id, **turn,
                                    "history": [_turn_json(t, p) for t, p in zip(it.history, paths)],
                                    "instruction": it.instruction, "references": list(it.references),
                                    "meta": {"task": name, **dict(it.meta)}}) + "\n")
                n += 1
        written.append(path)
    print(f"{n} items → " + ", ".join(map(str, written)))
    print(out)
    return 0


def _safe(name: str) -> str:
    """A task or item name as one file name (`manifest:dir/x.jsonl`, `voicebench:sd-qa`)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
