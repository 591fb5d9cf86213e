"""Plot training logs (JSON lines with step, loss and optionally dev_wer) to a PNG.

    python scripts/plot_training.py results/train/asr-char/train_log.jsonl systems/checkpoints/ctc-conformer/training.png

Several logs (the stages of a run continued with --init-from) are drawn one after the other, each
labelled by its run folder.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(*paths: str) -> None:
    *logs, out = paths
    fig, ax = plt.subplots(figsize=(6, 3.5))
    dev = []
    for log in logs:
        rows = [json.loads(l) for l in open(log) if l.strip()]
        dev += [r for r in rows if "dev_wer" in r]
        label = "training loss" if len(logs) == 1 else f"training loss, {Path(log).parent.name}"
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if dev:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in dev], [100 * r["dev_wer"] for r in dev], "o-", color="tab:red", label="dev WER %")
        ax2.set_ylabel("dev WER %")
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
