"""The one training loop and what the recipes share.

A recipe (`systems/asr/train.py`, `systems/audiochatllama/train.py`, `train_bridge.py`) says how it builds
its model, optimiser and batches and what one step's loss is (a `Run`), and hands that to `fit`, which
owns the rest: resume and --init-from, the warm-up + cosine schedule, the gradient clip, the log, dev
evaluation, the time limit and the step fitter (--max-minutes, --fit-steps) and checkpoints. Every
recipe's checkpoint has one layout:

    RUN/ckpt/               replaced atomically every `ckpt_every` steps and at the end (`replace_dir`)
      <the model's files>   what the recipe's `save` writes: a directory its model loads from
      train_config.json     {"layout": 2, "config": the recipe's config, "step", "start_step", "last_log"}
      trainer_state.pt      {"optimizer", "step", "rng": torch's random state, "cuda_rng" where there is one}

`read_record` also reads the layouts from before the one loop: train_config.json with the last log's
fields at its top level (asr), and config.json with the config under "train" (e2e).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

RECORD = "train_config.json"  # a checkpoint's (and an exported model's) training record
LAYOUT = 2  # 1: the three layouts from before the one loop (read by `read_record`)


def _range(text: str) -> tuple[float, float]:
    """A `tuple` field's option: LOW,HIGH (e.g. `--snr-range 5,35`; `--gain-db-range 0,0` draws a gain
    that changes nothing, so the random stream of the run stays that of a run with gains)."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give LOW,HIGH, two numbers, e.g. 5,35") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"{text!r}: LOW is above HIGH")
    return low, high


_TYPES = {"int": int, "float": float, "str": str, "tuple": _range}


def add_dataclass_options(ap: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One `--field-name` option per int/float/str field of `cls`, LOW,HIGH per (bare) `tuple` field, and
    `--flag/--no-flag` per bool field (default None: keep the preset); a field's `metadata["help"]` comes
    before its default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        default = (",".join(f"{v:g}" for v in f.default) if f.type == "tuple"
                   else "none" if f.default == "" else f.default)
        help = " ".join(filter(None, (f.metadata.get("help"), f"(default {default})")))
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


def config_from_dict(cls, saved: dict):
    """A config dataclass from its saved (JSON) form: nested configs rebuilt, lists made tuples again,
    keys that `cls` no longer has left out."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in saved:
            continue
        v = saved[f.name]
        nested = f.default_factory() if f.default_factory is not MISSING else None
        if isinstance(v, dict) and is_dataclass(nested):
            v = config_from_dict(type(nested), v)
        kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def warmup_cosine(step: int, warmup: int, steps: int, floor: float, start: int = 0) -> float:
    """The learning rate's scale at `step`: linear warm-up over `warmup` steps from `start` (0, or the
    step a run continued from with a fresh optimiser), then a cosine decay to `floor` at `steps`."""
    p = min(1.0, max(0.0, (step - start - warmup) / max(1, steps - start - warmup)))
    warm = min(1.0, (step - start + 1) / max(1, warmup))
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


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


# -- checkpoints ---------------------------------------------------------------------------------

def read_record(directory: Path) -> dict:
    """The training record of a checkpoint or an exported model directory, in whichever layout saved
    it: {"config", "step", "start_step", "last_log"}."""
    # before the one loop the e2e recipe kept its config under "train" in the model's config.json
    path = next((p for p in (Path(directory) / RECORD, Path(directory) / "config.json") if p.exists()), None)
    saved = json.loads(path.read_text()) if path else {}
    config = saved.get("config", saved.get("train"))
    if not isinstance(config, dict):
        raise FileNotFoundError(f"{directory}: no training record ({RECORD})")
    # the asr recipe wrote its last log line's fields at the top level
    flat = {k: v for k, v in saved.items() if k not in ("layout", "config", "train", "step", "start_step",
                                                         "model", "encoder_source", "llm_identity")}
    return {"config": config, "step": int(saved.get("step", 0)), "start_step": int(saved.get("start_step", 0)),
            "last_log": saved.get("last_log", flat)}


def saved_config(cls, directory: Path, overrides: dict | None = None, old_defaults: dict | None = None):
    """(config, record) of the run that saved `directory`, with `overrides` applied; options the run
    predates take `old_defaults` (what it ran with), not today's defaults."""
    record = read_record(directory)
    return config_from_dict(cls, {**(old_defaults or {}), **record["config"], **(overrides or {})}), record


def copy_record(src: Path, dst: Path) -> None:
    """Export: the training record goes with the model (`--init-from` and the cards read it)."""
    if (Path(src) / RECORD).exists():
        shutil.copy(Path(src) / RECORD, Path(dst) / RECORD)


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


def save_checkpoint(out: Path, run: Run, cfg, step: int, start: int, last: dict) -> None:
    """`out/ckpt` in the layout above (rank 0 only): written to `ckpt.tmp`, then swapped in."""
    if run.rank != 0:
        return
    tmp = out / "ckpt.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    record = {"layout": LAYOUT, "config": asdict(cfg), "step": step, "start_step": start, "last_log": last}
    run.save(tmp, record)
    (tmp / RECORD).write_text(json.dumps(record, indent=1))
    state = {"optimizer": run.optimizer.state_dict(), "step": step, "rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "trainer_state.pt")
    replace_dir(tmp, out / "ckpt")


def load_state(run: Run, state: dict) -> None:
    """A resumed run's optimiser and random state (checkpoints from before the one loop have no random state)."""
    run.optimizer.load_state_dict(state["optimizer"])
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    cuda = state.get("cuda_rng")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- the loop ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where a run starts. `path`: the checkpoint it resumes (with its trainer `state`: optimiser and
    random state) or the exported model it continues from with a fresh optimiser (--init-from); None:
    from scratch. `step`: its first step; `start`: the step its optimiser began at (the warm-up's)."""
    path: Path | None = None
    state: dict | None = None
    step: int = 0
    start: int = 0

    @property
    def resumed(self) -> bool:
        return self.state is not None


@dataclass
class Run:
    """What a recipe builds for `fit`. `batches` is endless and its i-th batch is the one for step
    `origin.step + i`, drawn from a random stream of that step's own, so a resumed run sees the batches
    an uninterrupted one would have. `loss(batch)`: one step's loss (the loop does backward, clip and
    optimiser step). `save(dir, record)`: the model's files. `evaluate()`: dev metrics for the log;
    `stats()`: more log fields. Of `world` processes, only rank 0 logs and saves."""
    model: Any
    optimizer: torch.optim.Optimizer
    batches: Iterable
    loss: Callable[[Any], torch.Tensor]
    save: Callable[[Path, dict], None]
    evaluate: Callable[[], dict] | None = None
    stats: Callable[[], dict] = dict
    lr_floor: float = 0.05  # the cosine ends at this share of each group's learning rate
    rank: int = 0
    world: int = 1


def step_rngs(seed, first: int):
    """Endless (random.Random, numpy Generator, random.Random for the augmentation levers) triples, one a
    step from `first` on, each seeded by `seed` and its step alone: a batch drawn from them is a function
    of its step, so a resumed run draws what an uninterrupted one would. The levers' stream is apart, so
    a run with a lever draws the same texts, voices and noise as one without (`systems.augment`). In
    DataLoader worker k of n, the steps first + k, first + k + n, ... (the loader takes the workers'
    batches in turn, so they arrive in step order whatever the worker count)."""
    info = torch.utils.data.get_worker_info()
    k, n = (info.id, info.num_workers) if info else (0, 1)
    for step in itertools.count(first + k, n):
        rng = random.Random(f"{seed}-{step}")
        yield rng, np.random.default_rng(rng.randrange(2**32)), random.Random(f"{seed}-{step}-augment")


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float) -> None:
    """Backward, the gradient norm of the optimiser's parameters clipped to `clip` (0: no clip), step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()


def origin_of(cfg, ckpt: Path, init_from: Path | None, keep: Iterable[str], keep_init: Iterable[str],
              old_defaults: dict | None):
    """(config, Origin) of a run: resumed from `ckpt` where it holds a checkpoint, else continued from
    `init_from`, else new. A resumed or continued run's config is the saved one but for the options in
    `keep` (`keep_init` on --init-from), which come from `cfg`."""
    if (ckpt / "trainer_state.pt").exists():
        path, names = ckpt, keep
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True, map_location="cpu")
    elif init_from is not None:
        path, names, state = Path(init_from), keep_init, None
    else:
        return cfg, Origin()
    cfg, record = saved_config(type(cfg), path, {k: getattr(cfg, k) for k in names}, old_defaults)
    step = int(state["step"]) if state else record["step"]
    return cfg, Origin(path, state, step, record["start_step"] if state else step)


class TrainLog:
    """RUN/train_log.jsonl, written by rank 0: every `log_every` steps the mean loss since the line
    before, the last step's learning rate, the seconds since the start and the recipe's stats; dev
    metrics every `eval_every` steps and at the end. A resumed run first drops the lines past its
    checkpoint (`resume_log`), so the log holds each step once."""

    def __init__(self, out: Path, run: Run, origin: Origin, eval_every: int, progress: bool):
        self.path, self.run, self.eval_every, self.progress = out / "train_log.jsonl", run, eval_every, progress
        self.t0, self.losses, self.last = time.time(), [], {}
        if run.rank == 0 and origin.resumed:
            resume_log(self.path, origin.step)
            print(f"resuming from step {origin.step}", file=sys.stderr)
        elif run.rank == 0 and origin.path is not None:
            print(f"continuing from {origin.path} at step {origin.step} (fresh optimiser)", file=sys.stderr)

    def __call__(self, step: int, final: bool = False) -> None:
        entry = {"step": step, "loss": sum(self.losses) / len(self.losses) if self.losses else None,
                 "lr": self.run.optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - self.t0, 1),
                 **self.run.stats()}
        self.losses.clear()
        if self.run.rank != 0:
            return
        if self.run.evaluate and (final or (self.eval_every and step % self.eval_every == 0)):
            entry.update(self.run.evaluate())
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.progress:
            print(json.dumps(entry), file=sys.stderr, flush=True)
        self.last = entry


def fit(cfg, out: Path, build: Callable[[Any, Origin], Run], *, init_from: Path | None = None,
        keep: Iterable[str] = (), keep_init: Iterable[str] | None = None, old_defaults: dict | None = None,
        max_minutes: float | None = None, fit_steps: bool = False, progress: bool = True) -> dict:
    """Train into `out` what `build(cfg, origin)` makes: resumed from `out/ckpt` where it holds a checkpoint,
    else continued from `init_from` (an exported model: its weights and step, a fresh optimiser warmed up
    again), else from scratch (see `origin_of`). `cfg` needs steps, warmup, grad_clip, log_every, ckpt_every,
    seed, threads (and eval_every where the recipe evaluates). With `max_minutes` the run stops (with a
    checkpoint) when the time is up; with `fit_steps` too, `steps` is lowered to what the measured speed fits
    in that time (StepFitter). Returns the last log entry, with the step reached."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, origin = origin_of(cfg, out / "ckpt", init_from, keep, keep if keep_init is None else keep_init, old_defaults)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = build(cfg, origin)
    base_lrs = [group["lr"] for group in run.optimizer.param_groups]
    batches = iter(run.batches)  # (a DataLoader draws its seed from torch's RNG here: before it is restored)
    if origin.resumed:
        load_state(run, origin.state)
    log, step = TrainLog(out, run, origin, getattr(cfg, "eval_every", 0), progress), origin.step
    fitter = StepFitter(step, max_minutes, log.t0, fit_steps and run.world == 1)  # DDP ranks must agree
    while step < cfg.steps and not (max_minutes and time.time() - log.t0 > 60 * max_minutes):
        scale = warmup_cosine(step, cfg.warmup, cfg.steps, run.lr_floor, origin.start)
        for group, lr in zip(run.optimizer.param_groups, base_lrs):
            group["lr"] = lr * scale
        loss = run.loss(next(batches))
        optimizer_step(run.optimizer, loss, cfg.grad_clip)
        log.losses.append(loss.item())
        step += 1
        cfg.steps = fitter(step, cfg.steps)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(step, final=step == cfg.steps)
        if step % cfg.ckpt_every == 0:
            save_checkpoint(out, run, cfg, step, origin.start, log.last)
    if log.losses:  # stopped by the clock between two log lines: log (and evaluate) where it stopped
        log(step, final=True)
    save_checkpoint(out, run, cfg, step, origin.start, log.last)
    return {**log.last, "step": step}
