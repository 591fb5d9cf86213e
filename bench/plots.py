"""PNG plots of a run's rows: robustness curves, WER-bucket bars, quality against latency.

Each plot is first reduced to its spec (the numbers and labels it draws) and drawn only where no
PNG of that spec exists yet: drawn PNGs are kept in the asset cache (`plots/`) under the hash of
the spec, this file and matplotlib's version. A rerun whose numbers did not change (every output
cached) copies them into its run directory without importing matplotlib, and a file that already
holds those bytes is not written again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from bench.conditions import family_of

PLOT_CACHE_FILES = 2000  # drawn PNGs kept in the cache (the least recently used go first)


def safe(name: str) -> str:
    """A task or condition name usable in a file name (`manifest:/a/b.jsonl` → `manifest_a_b.jsonl`)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def primary_metric(rows: list[dict], task: str) -> str:
    """The task's declared headline metric (rows carry `primary`), else its first metric."""
    mine = [r for r in rows if r["task"] == task]
    return next((r["metric"] for r in mine if r.get("primary")), mine[0]["metric"])


def _plain(rows):
    return [r for r in rows if not r.get("baseline") and not r.get("bucket") and not r.get("voice")]


def _yerr(ys, lo, hi) -> list[list[float]]:
    return [[y - l for y, l in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]]


def robustness(rows: list[dict], out: Path) -> list[Path]:
    """Per task and condition family: the task's primary metric against the parameter, a line per
    system, 95% CI as error bars; 'clean' is drawn at the family's neutral value."""
    rows, paths = _plain(rows), []
    families = {f[0].prefix: f[0] for r in rows if (f := family_of(r["condition"]))}
    for task in dict.fromkeys(r["task"] for r in rows):
        metric = primary_metric(rows, task)
        for name, fam in sorted(families.items()):
            series = []
            for system in dict.fromkeys(r["system"] for r in rows):
                pts = []
                for r in rows:
                    if (r["task"], r["metric"], r["system"]) != (task, metric, system):
                        continue
                    f = family_of(r["condition"])
                    x = fam.clean_at if r["condition"] == "clean" else (f[1] if f and f[0] is fam else None)
                    if x is not None and r["value"] == r["value"]:
                        pts.append((x, r["value"], r["ci_low"], r["ci_high"]))
                if len(pts) > 1:
                    pts.sort()
                    xs, ys, lo, hi = zip(*pts)
                    series.append({"label": system, "x": list(xs), "y": list(ys), "yerr": _yerr(ys, lo, hi)})
            if series:
                spec = {"kind": "lines", "figsize": [6, 4], "series": series,
                        "xlabel": f"{name} (clean = {fam.clean_at:g})", "ylabel": metric,
                        "title": f"{task}: {metric} under {name}", "invert_x": name.endswith("snr"), "grid": True}
                paths.append(_emit(out / f"plot-robustness-{safe(task)}-{name}.png", spec))
    return paths


def wer_buckets(rows: list[dict], out: Path) -> list[Path]:
    """Per task: the primary metric per WER bucket (clean condition), grouped bars per system."""
    paths = []
    sub = [r for r in rows if not r.get("baseline") and r.get("bucket") and r["condition"] == "clean"]
    for task in dict.fromkeys(r["task"] for r in sub):
        metric = primary_metric(sub, task)
        pts = [r for r in sub if r["task"] == task and r["metric"] == metric]
        buckets = list(dict.fromkeys(r["bucket"] for r in pts))
        systems = list(dict.fromkeys(r["system"] for r in pts))
        width = 0.8 / max(len(systems), 1)
        series = []
        for k, system in enumerate(systems):
            vals = {r["bucket"]: r for r in pts if r["system"] == system}
            series.append({"label": system, "x": [i + k * width for i in range(len(buckets))],
                           "y": [vals[b]["value"] if b in vals else 0 for b in buckets]})
        ns = {r["bucket"]: r["n"] for r in pts}
        by = pts[0]["bucket_by"]
        spec = {"kind": "bars", "figsize": [7, 4], "series": series, "width": width,
                "xticks": [i + width * (len(systems) - 1) / 2 for i in range(len(buckets))],
                "xticklabels": [f"{b}%\n(n={ns.get(b, 0)})" for b in buckets],
                "xlabel": f"{by} word error rate on the spoken turn", "ylabel": metric,
                "title": f"{task}: {metric} by {by} WER"}
        paths.append(_emit(out / f"plot-wer-buckets-{safe(task)}.png", spec))
    return paths


def quality_latency(rows: list[dict], latency: dict[tuple[str, str], float], out: Path) -> list[Path]:
    """Per task: the primary metric (clean) against mean seconds of model time per item, a point per system."""
    paths = []
    sub = [r for r in _plain(rows) if r["condition"] == "clean"]
    for task in dict.fromkeys(r["task"] for r in sub):
        metric = primary_metric(sub, task)
        series = [{"label": r["system"], "x": [latency[(r["system"], task)]], "y": [r["value"]],
                   "yerr": _yerr([r["value"]], [r["ci_low"]], [r["ci_high"]])}
                  for r in sub if r["task"] == task and r["metric"] == metric and (r["system"], task) in latency]
        spec = {"kind": "lines", "figsize": [5, 4], "series": series, "xlabel": "model seconds per item",
                "ylabel": metric, "title": f"{task}: quality against latency", "invert_x": False, "grid": True}
        paths.append(_emit(out / f"plot-latency-{safe(task)}.png", spec))
    return paths


# -- drawing, and the cache of drawn plots ----------------------------------------------------------

def _draw(spec: dict) -> bytes:
    """The PNG of a plot spec."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=tuple(spec["figsize"]))
    try:
        for s in spec["series"]:
            if spec["kind"] == "bars":
                ax.bar(s["x"], s["y"], spec["width"], label=s["label"])
            else:
                ax.errorbar(s["x"], s["y"], yerr=s["yerr"], marker="o", capsize=3, label=s["label"])
        if spec["kind"] == "bars":
            ax.set_xticks(spec["xticks"])
            ax.set_xticklabels(spec["xticklabels"])
        ax.set_xlabel(spec["xlabel"])
        ax.set_ylabel(spec["ylabel"])
        ax.set_title(spec["title"])
        if spec.get("invert_x"):
            ax.invert_xaxis()
        ax.legend()
        if spec.get("grid"):
            ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


@lru_cache(maxsize=1)
def _drawing_version() -> str:
    """What else decides a plot's pixels: this file (the drawing code) and matplotlib's version."""
    from importlib import metadata

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest() + metadata.version("matplotlib")


def _emit(path: Path, spec: dict) -> Path:
    """Write the plot of `spec` at `path`: from the cache of drawn plots where it is there, drawn (and
    cached) where not; left alone where the file already holds the same bytes."""
    from bench.assets import cache_dir
    from bench.report import write_if_changed

    key = hashlib.sha256((json.dumps(spec, sort_keys=True, default=str) + _drawing_version()).encode()).hexdigest()[:32]
    cached = cache_dir() / "plots" / f"{key}.png"
    try:
        data = cached.read_bytes()
        os.utime(cached)  # recently used: kept when the cache is trimmed
    except OSError:
        data = _draw(spec)
        _store(cached, data)
    write_if_changed(path, data)
    return path


def _store(cached: Path, data: bytes) -> None:
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        files = sorted(cached.parent.glob("*.png"), key=lambda p: p.stat().st_mtime)
        for old in files[:max(0, len(files) - PLOT_CACHE_FILES)]:
            old.unlink(missing_ok=True)
    except OSError:  # a read-only cache: the plot is drawn again next time
        pass
