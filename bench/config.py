"""Run configuration: a dataclass is the source of truth; a suite preset and CLI flags override it;
the resolved config (`Plan`) is written beside every run, in its record (config.json, bench/record.py)."""
from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path

from bench.registry import parse_list
from bench.types import TOPLINE

# the system the tasks named as the topline before it was a role of the run (the text topline)
LEGACY_TOPLINE = "text"


@dataclass
class Plan:
    """What a run is asked: systems, tasks, conditions, limits, the generation config, where the cache
    and the run directories live."""

    suite: str | None = None
    systems: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=lambda: ["clean"])
    # extra conditions for some tasks only (a robustness sweep where it is informative)
    sweep_tasks: list[str] = field(default_factory=list)
    sweep_conditions: list[str] = field(default_factory=list)
    optional_systems: list[str] = field(default_factory=list)  # skipped with a warning if unavailable
    limit: int | None = None
    # a task's own limit where it differs from `limit` (a suite's `[limits]` table: `spoken-qa = 100`);
    # `--limit N` on the command line sets every task's, these included
    limits: dict[str, int] = field(default_factory=dict)
    llm: str | None = None  # None: the embedded default
    dtype: str = "float32"
    device: str = "cpu"
    # requests a model call takes, every condition of a task together; continuous batching decodes up to this many
    # rows at once: on 2 CPU cores 256 rows decode 1.9x the tokens a second of 32 (results/perf_llm.md)
    batch_size: int = 256
    max_new_tokens: int = 64
    seed: int = 0
    output_dir: str = "results/runs"
    cache: str | None = None  # default: <output_dir>/cache.sqlite
    trust_remote_code: bool = False
    # per-system options, opaque to the harness: {system: {key: value}}, parsed and validated by each
    # system's factory (`--system-args 'cascade:asr=DIR,decoder=beam'`)
    system_args: dict[str, dict[str, str]] = field(default_factory=dict)
    # names given to systems in this run (`--systems 'prev=audiochatllama'`): {name: the system it runs},
    # so that one system can run twice, each time with its own `system_args` (two checkpoints, paired)
    aliases: dict[str, str] = field(default_factory=dict)
    # the systems every other one is compared with (paired differences), in this order, where present
    baselines: list[str] = field(default_factory=list)
    # whose transcripts bucket the items by word error rate (the first present)
    bucket_systems: list[str] = field(default_factory=list)
    # systems that read the gold text: shown in the headline, not ranked; the first present plays the
    # run's topline role (bench.types.TOPLINE: whose answers the agreement metrics and response-ppl use).
    # The list is presentation; the role changes those metrics' values, so `identity` holds the role
    toplines: list[str] = field(default_factory=list)
    # presentation only (not in `identity`): the systems that get a line of verdicts (default: all but
    # baselines and toplines)
    verdict_systems: list[str] = field(default_factory=list)
    # where local copies of public benchmarks live (`voicebench:sd-qa`, ...): a location, not in `identity`
    # (the items' content is in each task's version)
    data_dir: str | None = None
    # a system that judges open-ended answers (summarize, open) after generation; None: no judge
    judge: str | None = None

    def conditions_for(self, task: str) -> list[str]:
        extra = self.sweep_conditions if task in self.sweep_tasks else []
        return list(dict.fromkeys(self.conditions + extra))

    def limit_for(self, task: str) -> int | None:
        return self.limits.get(task, self.limit)

    def roles(self) -> dict[str, str]:
        """The systems that play a role in this run: the topline is the first of `toplines` among the
        run's systems, else the first named (a scoring task's reference need not be compared); none
        where the plan names no topline."""
        top = next((s for s in self.toplines if s in self.systems), self.toplines[0] if self.toplines else None)
        return {TOPLINE: top} if top else {}

    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.output_dir) / "cache.sqlite"

    def system_options(self) -> dict:
        """The options every system shares (which LLM, where, how long an answer); the rest are each
        system's own (`system_args`)."""
        return {"llm": self.llm, "dtype": self.dtype, "device": self.device,
                "max_new_tokens": self.max_new_tokens, "trust_remote_code": self.trust_remote_code}

    def identity(self) -> str:
        """Hash of what determines the results (not where they are written, nor batching, nor how they
        are shown): every row carries it as `config_hash`. The topline role is in it (it sets the values
        of the agreement metrics and response-ppl, and no row names it); the `toplines` list beyond it is
        presentation. Baselines and bucket systems stay in it though each row names the one it used
        (`baseline`, `bucket_by`): a hash finer than needed mixes up no results, and taking them out
        would change every run's identity."""
        d = asdict(self)
        for k in ("output_dir", "cache", "batch_size", "optional_systems", "toplines", "verdict_systems"):
            d.pop(k)
        d.pop("data_dir")
        for k in ("judge", "aliases", "limits"):  # runs without one keep the identity they had before it existed
            if not d[k]:
                d.pop(k)
        top = self.roles().get(TOPLINE)
        if top != LEGACY_TOPLINE:  # runs with the topline every run had before the role keep their identity
            d[TOPLINE] = top
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve(suite: dict | None, overrides: dict) -> Plan:
    """Suite preset first, then explicit flags (those not None); per-system arguments merge key by key."""
    cfg = Plan()
    for src in (suite or {}, overrides):
        for k, v in src.items():
            if v is None or not hasattr(cfg, k):
                continue
            if k == "system_args":
                for name, args in v.items():
                    cfg.system_args.setdefault(name, {}).update(args)
                continue
            setattr(cfg, k, parse_list(v) if isinstance(getattr(cfg, k), list) and isinstance(v, str) else v)
    if overrides.get("limit") is not None:  # one number asked for on the command line: every task's
        cfg.limits = {}
    for i, entry in enumerate(cfg.systems):
        name, system = split_alias(entry)
        if name != entry:
            cfg.aliases[name], cfg.systems[i] = system, name
    given = {k for src in (suite or {}, overrides) for k, v in src.items() if v is not None}
    if cfg.device.startswith("cuda"):  # an accelerator's defaults, where neither suite nor flag chose
        for k, v in GPU_DEFAULTS.items():
            if k not in given:
                setattr(cfg, k, v)
    return cfg


def split_alias(entry: str) -> tuple[str, str]:
    """`NAME=SYSTEM` → (NAME, SYSTEM); anything else (`cascade`, `hf:org/model`, a family's ARG that
    holds "=" after its ":") → (entry, entry). NAME: letters, digits, `_ . -`."""
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", entry)
    return (m.group(1), m.group(2)) if m else (entry, entry)


# On `--device cuda`: bf16 weights (half the memory traffic, tensor cores) and 64 requests a call (kept below
# the CPU's 256 for the larger models a GPU runs, whose batch of long audio prompts must fit beside their
# weights; not measured at 256); `--dtype float32` / `--batch-size N` still choose.
GPU_DEFAULTS = {"dtype": "bfloat16", "batch_size": 64}


def parse_system_args(specs: list[str] | None) -> dict[str, dict[str, str]]:
    """`['cascade:asr=DIR,decoder=beam', 'audiochatllama:checkpoint=DIR']` → {system: {key: value}}
    (the convention of lm-evaluation-harness's `--model_args`, one string per system). The system is
    what precedes the last `:` before the first `=`, so a family member's name may hold colons of its
    own (`hf-audio:ID:key=value`) and a value may too (`base_url=http://host:8000`)."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs or []:
        eq = spec.find("=")
        cut = spec.rfind(":", 0, eq if eq >= 0 else len(spec))
        name, sep, rest = (spec[:cut], ":", spec[cut + 1:]) if cut >= 0 else (spec, "", "")
        if not sep or not name.strip():
            raise ValueError(f"--system-args {spec!r}: write SYSTEM:key=value[,key=value...]")
        args = out.setdefault(name.strip(), {})
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"--system-args {spec!r}: {pair!r} is not key=value")
            args[key.strip()] = value.strip()
    return out


def git_sha() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        return sha.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    versions = {}
    for pkg in ("audiochat-bench", "torch", "transformers", "numpy", "sacrebleu", "jiwer", "tokenizers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "git_sha": git_sha(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
