"""Small pieces shared by the training recipes: config dataclasses as command-line options,
checkpoints that replace the previous one atomically, logs that a resumed run continues without
repeats, half-size exports, the warm-up + cosine learning-rate schedule, and a schedule fitted to a
machine lent for a fixed time."""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

_TYPES = {"int": int, "float": float, "str": str}


def add_dataclass_options(ap: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` option per int/float/str field of `cls`, and `--flag/--no-flag` per bool
    field (default None: keep the preset); a field's `metadata["help"]` comes before its default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        help = " ".join(filter(None, (f.metadata.get("help"), f"(default {'none' if f.default == '' else f.default})")))
        if f.type in _TYPES:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=_TYPES[f.type], help=help)
        elif f.type == "bool":
            ap.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                            help=help)


def apply_options(cfg, args: argparse.Namespace) -> tuple[str, ...]:
    """Copy the options the user gave onto `cfg`; return their names."""
    given = []
    for f in fields(cfg):
        v = getattr(args, f.name, None)
        if v is not None and f.type in (*_TYPES, "bool"):
            setattr(cfg, f.name, v)
            given.append(f.name)
    return tuple(given)


def warmup_cosine(step: int, warmup: int, steps: int, floor: float, start: int = 0) -> float:
    """The learning rate's scale at `step`: linear warm-up over `warmup` steps from `start` (0, or the
    step a run continued from with a fresh optimiser), then a cosine decay to `floor` at `steps`."""
    p = min(1.0, max(0.0, (step - start - warmup) / max(1, steps - start - warmup)))
    warm = min(1.0, (step - start + 1) / max(1, warmup))
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def halve_safetensors(path: Path) -> None:
    """Rewrite a safetensors file with its floating-point tensors as float16: half the size for an
    exported model (loading copies them into float32 parameters again)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(path))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(path),
              metadata={"format": "pt"})


def replace_dir(tmp: Path, final: Path) -> None:
    """Make `tmp` the new `final`: the previous one is kept as `final.old` until the next save, so a
    crash at any moment leaves one complete checkpoint."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)


def resume_log(path: Path, step: int) -> None:
    """Before a run resumes from its checkpoint at `step`: drop the log entries past that step (what the
    stopped run logged after its last checkpoint, and will log again), so the log holds each step once."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    keep = [l for l in lines if json.loads(l).get("step", 0) <= step]
    if len(keep) < len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(l + "\n" for l in keep))
        os.replace(tmp, path)


class StepFitter:
    """`--fit-steps` with `--max-minutes`: 50 steps after `first` (the loaders warmed up) it starts a
    clock, and 250 steps later, or as soon as 20 measured steps and a fifth of the time are gone (slow
    steps), it returns the step count that the measured speed fits in the time left (95 %), no more than
    `planned`, so a schedule decaying to `steps` ends when the time does."""

    def __init__(self, first: int, max_minutes: float | None, t_start: float, enabled: bool = True):
        self.first, self.t_start, self.t_rate, self.fitted = first, t_start, None, False
        self.budget = 60 * max_minutes if (enabled and max_minutes) else None

    def __call__(self, step: int, planned: int) -> int:
        if self.budget is None or self.fitted:
            return planned
        now, measured = time.time(), step - self.first - 50
        if measured == 0:
            self.t_rate = now
        elif self.t_rate is not None and (measured == 250 or (measured >= 20 and now - self.t_start > 0.2 * self.budget)):
            left = self.budget - (now - self.t_start)
            planned = min(planned, step + int(0.95 * left * measured / (now - self.t_rate)))
            self.fitted = True
            print(f"fitted the schedule to the time left: {planned} steps", file=sys.stderr, flush=True)
        return planned
        if step == self.first + 50:
            self.t_rate = time.time()
        elif step == self.first + 300 and self.t_rate is not None:
            left = self.budget - (time.time() - self.t_start)
            planned = min(planned, step + int(0.95 * left * 250 / (time.time() - self.t_rate)))
            print(f"fitted the schedule to the time left: {planned} steps", file=sys.stderr, flush=True)
        return planned
