"""`audiochat-bench chat --system NAME`: talk to any system in the terminal.

Each line you enter is one user turn:
  plain text            a typed turn
  say: <text>           a spoken turn, synthesised by the project's TTS (held-out test voice)
  <path to audio file>  a spoken turn from a wav/flac/ogg file
  /reset                forget the conversation      /quit (or an empty line, or Ctrl-D)  leave
The conversation carries over between turns; the cascade shows what its ASR heard.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.audio import load_audio
from bench.options import add_model_options, system_args_of
from bench.types import AudioError, Turn


def parse_turn(line: str, voice: str = "en-us+f4") -> Turn:
    """A user turn from one input line (see the module docstring)."""
    from bench.tts import Voice, synthesize

    if line.lower().startswith("say:"):
        text = line[4:].strip()
        return Turn("user", audio=synthesize(text, Voice(voice)), transcript=text)
    p = Path(line).expanduser()
    if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3") or p.is_file():
        return Turn("user", audio=load_audio(p))
    return Turn("user", text=line)


def add_parser(sub) -> None:
    c = sub.add_parser("chat", help="talk to a system: typed text, `say: ...` (TTS) or an audio file path",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    c.add_argument("--system", required=True, help="system name (see `list`), e.g. cascade-whisper")
    c.add_argument("--llm", help="chat LLM (embedded name, model id or path)")
    c.add_argument("--instruction", help="a system prompt for the whole conversation")
    c.add_argument("--voice", default="en-us+f4", help="TTS voice for `say:` turns")
    c.add_argument("--max-new-tokens", type=int, default=96)
    add_model_options(c)


def cmd_chat(args) -> int:
    from bench.plugins import Context, build_system

    system = build_system(args.system, Context(llm=args.llm, max_new_tokens=args.max_new_tokens),
                          system_args_of(args).get(args.system, {}))
    history: list[Turn] = []
    interactive = sys.stdin.isatty()
    print(f"chatting with {args.system} (typed text, `say: ...`, or an audio path; /reset, /quit)")
    while True:
        try:
            line = input("you> " if interactive else "").strip()
        except EOFError:
            break
        if not interactive:
            print(f"you> {line}")
        if line in ("", "/quit", "/exit"):
            break
        if line == "/reset":
            history = []
            print("(conversation cleared)")
            continue
        try:
            turn = parse_turn(line, args.voice)
        except (AudioError, OSError, ValueError) as e:
            print(f"(cannot use that turn: {e})")
            continue
        try:
            gen = system.generate(turn, tuple(history), args.instruction)
        except Exception as e:  # keep the session alive: show the reason, drop the turn
            print(f"({args.system} failed: {type(e).__name__}: {e})")
            continue
        if turn.spoken:
            heard = gen.transcript if gen.transcript is not None else "(audio)"
            print(f"  [{'spoken' if turn.transcript else 'audio file'}; {args.system} heard: {heard}]")
        print(f"{args.system}> {gen.text}")
        history += [turn, Turn("assistant", text=gen.text)]
    return 0
