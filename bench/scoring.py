"""Score stored outputs into tidy rows. Needs no model: only items, generations and metrics.

Both metric kinds reduce to a matrix of per-item statistics S (n × k) and a function of its column
sums (a mean is sum/n), so one vectorised bootstrap serves item means and corpus scores alike:
each resample is a vector of item counts w, and its score is aggregate(w @ S).

Scoring a run asks for the same numbers many times (every system against each baseline, then again
per WER bucket), so both the per-item statistics and the bootstrap values are memoised by what they
are computed from: an item's statistic by (metric, the item, the generations' values), living as
long as the item does; the resampled values by (aggregate, S, n_boot, seed). An aggregate may carry
`batched`, a function of the (B × k) resampled totals, so that a corpus metric's thousand resamples
are one array operation instead of a thousand calls.
"""
from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Mapping

import numpy as np

from bench.stats import ALPHA, N_BOOT, resample_counts
from bench.types import Generation, Item, Metric, Task
from bench.voices import family_of

Outputs = Mapping[str, Generation | None]  # item id → generation (None: the item failed)


_ITEM_MEMO: dict[int, dict] = {}  # id(item) → {(metric, generation, context): statistic}; dropped with the item
_BOOT_MEMO: OrderedDict = OrderedDict()  # (aggregate, S, n_boot, seed) → resampled values (most recent last)
_BOOT_MEMO_SIZE = 4096


def _gen_key(g: Generation | None) -> tuple | None:
    """Everything of a generation a metric can read, as a hashable value."""
    if g is None:
        return None
    return g.text, g.transcript, tuple(sorted(g.seconds.items())), g.tokens, g.nll


def metric_labels(metric: Metric) -> dict:
    """The fields a metric's rows carry (`Metric.labels`): empty for most metrics."""
    return dict(metric.labels()) if metric.labels else {}


def task_signatures(task: Task) -> dict:
    """How a task's numbers were computed, for config.json: its own `signatures()` where it has them
    (sacrebleu's) and its metrics' labels (the WER normaliser)."""
    out = dict(task.signatures()) if hasattr(task, "signatures") else {}
    for m in task.metrics:
        out.update(metric_labels(m))
    return out


def item_statistic(metric: Metric, it: Item, g: Generation, ctx: dict):
    """metric.fn(it, g, ctx) as a 1-d float array (None: not applicable), memoised per item (the
    item's entry goes when the item does): the report's per-item values reuse the scoring's."""
    try:
        key = (metric, tuple(metric_labels(metric).items()), _gen_key(g),  # (a normaliser chosen anew)
               tuple((k, _gen_key(v)) for k, v in ctx.items()))
        memo = _ITEM_MEMO.get(id(it))
        if memo is None:
            weakref.finalize(it, _ITEM_MEMO.pop, id(it), None)
            memo = _ITEM_MEMO[id(it)] = {}
        if key in memo:
            return memo[key]
    except TypeError:  # an item without weak references, or a value that cannot be hashed: not memoised
        memo = None
    v = metric.fn(it, g, ctx)
    v = None if v is None else np.atleast_1d(np.asarray(v, dtype=float))
    if memo is not None:
        memo[key] = v
    return v


def item_statistics(metric: Metric, items: list[Item], outputs: Outputs,
                    context: Mapping[str, Outputs]) -> tuple[list[str], np.ndarray, int]:
    """(ids of scored items, their statistics matrix, number of failed items)."""
    ids, stats, n_failed = [], [], 0
    for it in items:
        g = outputs.get(it.id)
        if g is None:
            n_failed += 1
            continue
        v = item_statistic(metric, it, g, {k: out.get(it.id) for k, out in context.items()})
        if v is None:
            continue
        if metric.kind == "item" and not math.isfinite(float(v[0])):
            continue
        ids.append(it.id)
        stats.append(v)
    width = stats[0].size if stats else 1
    return ids, (np.vstack(stats) if stats else np.zeros((0, width))), n_failed


def metric_value(metric: Metric, S: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """The metric from statistics S; with `weights` (B × n resample counts), one value per resample."""
    agg = metric.aggregate
    if weights is None:
        total = S.sum(0)
        return float(agg(total)) if agg else float(total[0] / len(S))
    totals = weights @ S
    if agg is None:
        return totals[:, 0] / len(S)
    batched = getattr(agg, "batched", None)
    if batched is not None:
        return np.asarray(batched(totals), dtype=float)
    return np.array([agg(t) for t in totals], dtype=float)


def _boots(metric: Metric, S: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """metric_value over the (seed's) bootstrap resamples of S's rows, memoised by value: a system's
    own interval and its paired differences against each baseline resample the same S."""
    S = np.ascontiguousarray(S, dtype=float)
    key = (metric.aggregate, S.shape, S.tobytes(), n_boot, seed)
    if key in _BOOT_MEMO:
        _BOOT_MEMO.move_to_end(key)
        return _BOOT_MEMO[key]
    out = np.asarray(metric_value(metric, S, resample_counts(len(S), n_boot, seed)), dtype=float)
    out.flags.writeable = False
    _BOOT_MEMO[key] = out
    if len(_BOOT_MEMO) > _BOOT_MEMO_SIZE:
        _BOOT_MEMO.popitem(last=False)
    return out


def score_metric(metric: Metric, items: list[Item], outputs: Outputs, context: Mapping[str, Outputs],
                 seed: int = 0, n_boot: int = N_BOOT) -> dict | None:
    """One metric of one system on one task/condition: value, 95% bootstrap CI, n, n_failed.

    Failed items are excluded and counted in `n_failed`. Returns None when the metric needs another
    system's outputs that the run does not have (for example no topline ran).
    """
    if metric.needs is not None and metric.needs not in context:
        return None
    _, S, n_failed = item_statistics(metric, items, outputs, context)
    n = len(S)
    if n == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_failed": n_failed}
    boots = _boots(metric, S, n_boot, seed)
    boots = boots[np.isfinite(boots)]
    lo, hi = (np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2]) if boots.size else (float("nan"),) * 2)
    return {"value": metric_value(metric, S), "ci_low": float(lo), "ci_high": float(hi), "n": n, "n_failed": n_failed}


def paired_difference(metric: Metric, items: list[Item], outputs: Outputs, baseline: Outputs,
                      context: Mapping[str, Outputs], seed: int = 0, n_boot: int = N_BOOT) -> dict | None:
    """metric(system) − metric(baseline) on the items both answered, with a paired bootstrap CI:
    each resample draws the same items for both. `significant`: the interval excludes zero."""
    if metric.needs is not None and metric.needs not in context:
        return None
    ids_s, S, _ = item_statistics(metric, items, outputs, context)
    ids_b, B, _ = item_statistics(metric, items, baseline, context)
    common = sorted(set(ids_s) & set(ids_b))
    if not common:
        return None
    S = S[[ids_s.index(i) for i in common]]
    B = B[[ids_b.index(i) for i in common]]
    boots = _boots(metric, S, n_boot, seed) - _boots(metric, B, n_boot, seed)  # the same resamples for both
    boots = boots[np.isfinite(boots)]
    lo, hi = np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2]) if boots.size else (float("nan"),) * 2
    return {"value": metric_value(metric, S) - metric_value(metric, B), "ci_low": float(lo), "ci_high": float(hi),
            "n": len(common), "n_failed": len(items) - len(common), "significant": bool(lo > 0 or hi < 0)}


def score_task(task: Task, condition: str, items: list[Item], by_system: Mapping[str, Outputs],
               baselines: tuple[str, ...] | list[str] = (), extra: Mapping | None = None) -> list[dict]:
    """Rows for every (system, metric) of one task under one condition, and paired differences of
    every other system against each of `baselines` present (`baseline` column set). `extra`: fields
    every row carries (a WER bucket, ...). Every row names the voice family that spoke the items
    (`voice_family`: espeak, kokoro, piper, recorded or typed)."""
    rows, primary, family = [], task.primary_metric(), family_of(condition, items)
    for system, outputs in by_system.items():
        for metric in task.metrics:
            context = {metric.needs: by_system[metric.source]} if metric.source in by_system else {}
            base = {"system": system, "task": task.name, "task_version": task.version, "condition": condition,
                    "voice_family": family, **(extra or {}), "metric": metric.name,
                    "higher_is_better": metric.higher_is_better, "timing": metric.timing, "primary": metric.name == primary,
                    **metric_labels(metric)}
            res = score_metric(metric, items, outputs, context)
            if res is None:
                continue
            rows.append({**base, "baseline": None, **res})
            for b in baselines:
                if b == system or b not in by_system or metric.source == b:
                    continue  # agreement with the topline is not compared against the topline itself
                diff = paired_difference(metric, items, outputs, by_system[b], context)
                if diff is not None:
                    rows.append({**base, "baseline": b, **diff})
    return rows
