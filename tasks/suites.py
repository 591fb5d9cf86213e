"""Named suites: which systems, tasks and conditions a run compares, and how many items.

Each built-in suite is a TOML file in tasks/suites/ (`smoke.toml`, `default.toml`, ...) that a user
can copy and edit; `SUITES` maps each name to its dict. A suite's keys are `Plan` fields
(bench/config.py) plus `about`:

    about = "one line for `audiochat-bench list`"
    systems = ["text", "cascade"]           # what is compared
    optional_systems = ["cascade"]          # skipped with a warning when they cannot be built
    tasks = ["spoken-qa", "asr"]
    conditions = ["clean"]
    sweep_tasks = ["asr"]                   # extra conditions for these tasks only
    sweep_conditions = ["white-snr10"]
    limit = 24                              # items per task; absent: every item
    [limits]                                # a task's own limit (a table: after every other key)
    spoken-qa = 100
    baselines = ["cascade", "text"]         # paired differences of every other system against these
    bucket_systems = ["cascade"]            # whose transcripts define the WER buckets (first present)
    toplines = ["text"]                     # in the headline, not ranked (it reads the gold text)
    verdict_systems = ["audiochatllama"]    # who gets verdicts (default: all but baselines and toplines)

`suite_from_file(path)` reads and checks one such file (a user's own, for `run --suite FILE.toml`);
`load_suite(path_or_name)` takes either a built-in suite's name or a path to a file.
"""
from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

from bench.registry import RegistryError

SUITE_DIR = Path(__file__).parent / "suites"
ORDER = ("smoke", "default", "ablations", "full", "real")  # how `list` shows the built-in suites: quickest first


def _known_keys() -> dict[str, Any]:
    """Key → its Plan default (which gives the expected type), plus `about`."""
    from dataclasses import MISSING, fields

    from bench.config import Plan

    keys: dict[str, Any] = {"about": ""}
    for f in fields(Plan):
        keys[f.name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return keys


def suite_from_file(path: str | Path) -> dict:
    """One suite from a TOML file (format in this module's docstring), checked: an unknown key (a
    typo would otherwise be ignored silently) or a value of the wrong type raises ValueError naming
    the file. `limit` is None when absent, as in every suite dict."""
    path = Path(path)
    try:
        suite = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"suite file {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    known = _known_keys()
    for key, value in suite.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ValueError(f"{path}: unknown key {key!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                             + f" Suite keys: {', '.join(known)}")
        default = known[key]
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            want = "a list of strings"
        elif key == "limit":
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            want = "a positive integer (leave it out for every item)"
        elif key == "limits":
            ok = isinstance(value, dict) and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                 for n in value.values())
            want = "a table of task = positive integer"
        elif default is None or isinstance(default, dict):
            ok, want = True, ""  # free-form values (a path, per-system arguments): their users check them
        else:
            ok, want = isinstance(value, type(default)), f"a {type(default).__name__}"
        if not ok:
            raise ValueError(f"{path}: {key} must be {want}, got {value!r}")
    suite.setdefault("limit", None)
    return suite


def _builtin() -> dict[str, dict]:
    files = {p.stem: p for p in SUITE_DIR.glob("*.toml")}
    names = [n for n in ORDER if n in files] + sorted(set(files) - set(ORDER))
    return {n: suite_from_file(files[n]) for n in names}


SUITES: dict[str, dict] = _builtin()


def load_suite(path_or_name: str | Path) -> dict:
    """A built-in suite by name, or a suite file by path (anything ending in .toml, or an existing
    file); a copy, so the caller may change it. An unknown name raises RegistryError with close
    matches."""
    p = Path(path_or_name)
    if p.suffix == ".toml" or p.is_file():
        return suite_from_file(p)
    name = str(path_or_name)
    if name not in SUITES:
        close = difflib.get_close_matches(name, SUITES, n=2)
        raise RegistryError(f"unknown suite {name!r}." + (f" Did you mean {close[0]!r}?" if close else "")
                            + f" Known suites: {', '.join(SUITES)} (or a path to a .toml file)")
    return copy.deepcopy(SUITES[name])
