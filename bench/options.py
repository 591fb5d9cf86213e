"""Command-line options that `run` and `chat` share: each system's own options (`--system-args`) and
the older flags the systems package declares as aliases of them."""
from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Per-system options (`run` and `chat` take the same): `--system-args`, and the older flags that
    the systems package declares as its aliases."""
    from bench.plugins import aliases

    p.add_argument("--system-args", action="append", metavar="SYSTEM:KEY=VALUE[,KEY=VALUE]",
                   help="a system's own options, one flag per system (repeatable), e.g. 'cascade:decoder=greedy'; "
                        "`audiochat-bench list` shows every system's keys")
    for flag, spec in aliases().items():
        name = "--" + flag.replace("_", "-")
        if "value" in spec:
            p.add_argument(name, dest=flag, action="store_true", default=None, help=spec["help"])
        else:
            p.add_argument(name, dest=flag, metavar="VALUE", help=spec["help"])


def system_args_of(args) -> dict[str, dict[str, str]]:
    """`--system-args` with the alias flags under them (an explicit --system-args key wins)."""
    from bench.config import parse_system_args
    from bench.plugins import alias_args, aliases

    out = alias_args({flag: getattr(args, flag, None) for flag in aliases()})
    for name, kv in parse_system_args(getattr(args, "system_args", None)).items():
        out.setdefault(name, {}).update(kv)
    return out
