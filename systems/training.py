"""Small pieces shared by the training recipes: config dataclasses as command-line options,
checkpoints that replace the previous one atomically, and half-size exports."""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import fields
from pathlib import Path

_TYPES = {"int": int, "float": float, "str": str}


def add_dataclass_options(ap: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` option per int/float/str field of `cls`, and `--flag/--no-flag` per bool
    field (default None: keep the preset)."""
    for f in fields(cls):
        if f.name in skip:
            continue
        if f.type in _TYPES:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=_TYPES[f.type], help=f"(default {f.default})")
        elif f.type == "bool":
            ap.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"(default {f.default})")


def apply_options(cfg, args: argparse.Namespace) -> tuple[str, ...]:
    """Copy the options the user gave onto `cfg`; return their names."""
    given = []
    for f in fields(cfg):
        v = getattr(args, f.name, None)
        if v is not None and f.type in (*_TYPES, "bool"):
            setattr(cfg, f.name, v)
            given.append(f.name)
    return tuple(given)


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
