"""Where a run's time goes, per system and stage.

Systems say how long their parts took in `Generation.seconds` (`{"asr": 1.2, "llm": 0.4, "audio": 3.1}`:
model stages in seconds per item, and `audio`, the clip's duration, for RTFx). A stage may name its parts
after a dot (`asr.encoder`, `asr.decode`, `asr.rescore` are parts of `asr`); `StageClock` is how a
component measures them. The runner adds what no system sees: loading and synthesising the audio and
applying the condition, the rest of each model call (weights loading on first use, batching, padding),
and writing to the cache; the evaluator adds scoring and the report. Every run writes the result as
`profile.md` (torchrun: every rank's generation time, gathered on rank 0).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterable, Iterator, Mapping

HARNESS = "(harness)"  # the "system" of the stages that are the harness's own: scoring, report
STAGE_LABELS = {"audio": "audio: load, TTS, condition", "other": "rest of the model call (loading, batching)",
                "cache": "cache writes"}


def model_seconds(seconds: Mapping[str, float]) -> float:
    """A generation's model time: every stage but `audio` (the clip's duration) and the parts of a
    stage (`asr.encoder` is counted in `asr`)."""
    return sum(v for k, v in seconds.items() if k != "audio" and "." not in k)


class StageClock:
    """Seconds per named stage, summed over calls: `with clock("encoder"): ...`; `clock.seconds`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


class Profile:
    """Wall seconds per (system, stage) and items per system, for one run (picklable: torchrun ranks
    send theirs to rank 0, which `merge`s them)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.items: dict[str, int] = defaultdict(int)

    def add(self, system: str, stage: str, seconds: float) -> None:
        self.seconds[(system, stage)] += seconds

    @contextlib.contextmanager
    def time(self, system: str, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(system, stage, time.perf_counter() - t0)

    def add_call(self, system: str, generations: Iterable, wall: float) -> None:
        """One model call of `wall` seconds that produced `generations` (None where an item failed):
        its stages as the generations report them, the remainder as `other`."""
        parts: dict[str, float] = defaultdict(float)
        n = 0
        for g in generations:
            if g is None:
                continue
            n += 1
            for k, v in g.seconds.items():
                if k != "audio":
                    parts[k] += float(v)
        for k, v in parts.items():
            self.add(system, k, v)
        self.add(system, "other", max(wall - model_seconds(parts), 0.0))
        self.items[system] += n

    def merge(self, others: Iterable["Profile"]) -> "Profile":
        for p in others:
            if p is self:
                continue
            for k, v in p.seconds.items():
                self.seconds[k] += v
            for k, v in p.items.items():
                self.items[k] += v
        return self

    def total(self, system: str) -> float:
        return sum(v for (s, k), v in self.seconds.items() if s == system and "." not in k)

    def markdown(self, title: str = "Profile") -> str:
        """Per system its seconds and share of the run, then each system's stages (largest first;
        parts under their stage), seconds per item and share of that system's time."""
        systems = list(dict.fromkeys(s for s, _ in self.seconds))
        run = sum(self.total(s) for s in systems) or 1.0
        lines = [f"# {title}", "", "| system | items | seconds | share of the run | seconds per item |",
                 "|---|---|---|---|---|"]
        for s in sorted(systems, key=self.total, reverse=True):
            n = self.items.get(s, 0)
            per = f"{self.total(s) / n:.3f}" if n else "–"
            lines.append(f"| {s} | {n or '–'} | {self.total(s):.2f} | {100 * self.total(s) / run:.1f} % | {per} |")
        lines += ["", "| system | stage | seconds | share of the system | seconds per item |", "|---|---|---|---|---|"]
        for s in sorted(systems, key=self.total, reverse=True):
            tot, n = self.total(s) or 1.0, self.items.get(s, 0)
            stages = {k: v for (sy, k), v in self.seconds.items() if sy == s}
            for k in sorted((k for k in stages if "." not in k), key=stages.get, reverse=True):
                for name in [k] + sorted((p for p in stages if p.startswith(k + ".")), key=stages.get, reverse=True):
                    label = STAGE_LABELS.get(name, name) if name == k else f"· {name.partition('.')[2]}"
                    per = f"{stages[name] / n:.3f}" if n else "–"
                    lines.append(f"| {s} | {label} | {stages[name]:.2f} | {100 * stages[name] / tot:.1f} % | {per} |")
        return "\n".join(lines) + "\n"
