"""PNG plots of a run's rows: robustness curves, WER-bucket bars, quality against latency."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from bench.conditions import family_of  # noqa: E402


def safe(name: str) -> str:
    """A task or condition name usable in a file name (`manifest:/a/b.jsonl` → `manifest_a_b.jsonl`)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def primary_metric(rows: list[dict], task: str) -> str:
    """The task's declared headline metric (rows carry `primary`), else its first metric."""
    mine = [r for r in rows if r["task"] == task]
    return next((r["metric"] for r in mine if r.get("primary")), mine[0]["metric"])


def _plain(rows):
    return [r for r in rows if not r.get("baseline") and not r.get("bucket") and not r.get("voice")]


def robustness(rows: list[dict], out: Path) -> list[Path]:
    """Per task and condition family: the task's primary metric against the parameter, a line per
    system, 95% CI as error bars; 'clean' is drawn at the family's neutral value."""
    rows, paths = _plain(rows), []
    families = {f[0].prefix: f[0] for r in rows if (f := family_of(r["condition"]))}
    for task in dict.fromkeys(r["task"] for r in rows):
        metric = primary_metric(rows, task)
        for name, fam in sorted(families.items()):
            fig, ax = plt.subplots(figsize=(6, 4))
            drawn = False
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
                    ax.errorbar(xs, ys, yerr=[[y - l for y, l in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]],
                                marker="o", capsize=3, label=system)
                    drawn = True
            if drawn:
                ax.set_xlabel(f"{name} (clean = {fam.clean_at:g})")
                ax.set_ylabel(metric)
                ax.set_title(f"{task}: {metric} under {name}")
                if name.endswith("snr"):
                    ax.invert_xaxis()
                ax.legend()
                ax.grid(alpha=0.3)
                p = out / f"plot-robustness-{safe(task)}-{name}.png"
                fig.savefig(p, dpi=100, bbox_inches="tight")
                paths.append(p)
            plt.close(fig)
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
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / max(len(systems), 1)
        for k, system in enumerate(systems):
            vals = {r["bucket"]: r for r in pts if r["system"] == system}
            xs = [i + k * width for i in range(len(buckets))]
            ys = [vals[b]["value"] if b in vals else 0 for b in buckets]
            ax.bar(xs, ys, width, label=system)
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(buckets))])
        ns = {r["bucket"]: r["n"] for r in pts}
        by = pts[0]["bucket_by"]
        ax.set_xticklabels([f"{b}%\n(n={ns.get(b, 0)})" for b in buckets])
        ax.set_xlabel(f"{by} word error rate on the spoken turn")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric} by {by} WER")
        ax.legend()
        p = out / f"plot-wer-buckets-{safe(task)}.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths


def quality_latency(rows: list[dict], latency: dict[tuple[str, str], float], out: Path) -> list[Path]:
    """Per task: the primary metric (clean) against mean seconds of model time per item, a point per system."""
    paths = []
    sub = [r for r in _plain(rows) if r["condition"] == "clean"]
    for task in dict.fromkeys(r["task"] for r in sub):
        metric = primary_metric(sub, task)
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in sub:
            if r["task"] == task and r["metric"] == metric and (r["system"], task) in latency:
                x = latency[(r["system"], task)]
                ax.errorbar([x], [r["value"]], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                            marker="o", capsize=3, label=r["system"])
        ax.set_xlabel("model seconds per item")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: quality against latency")
        ax.legend()
        ax.grid(alpha=0.3)
        p = out / f"plot-latency-{safe(task)}.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths
