"""WER of each system on the built-in `asr` task of a run, by voice group (accent of the test voice).

    python scripts/wer_by_voice.py results/runs/<run-id>
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

from bench.plugins import build_task
from tasks.metrics import edit_statistics
from tasks.normalize import normalize_english


def main(run_dir: str) -> None:
    voice = {it.id: it.turn.audio.origin.split(":")[1].split("+")[0] for it in build_task("asr").items()}
    stats = defaultdict(lambda: [0, 0])
    for line in Path(run_dir, "outputs.jsonl").read_text().splitlines():
        o = json.loads(line)
        if o["task"] != "asr" or o["condition"] != "clean" or o["status"] != "ok":
            continue
        e, n = edit_statistics(normalize_english(o["transcript"] or o["text"]), normalize_english(o["references"][0]))
        for key in ((o["system"], voice[o["item_id"]]), (o["system"], "all")):
            stats[key][0] += e
            stats[key][1] += n
    groups = sorted({g for _, g in stats} - {"all"}) + ["all"]
    systems = sorted({s for s, _ in stats})
    print("| system | " + " | ".join(groups) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for s in systems:
        print(f"| {s} | " + " | ".join(f"{100 * stats[(s, g)][0] / max(stats[(s, g)][1], 1):.1f}" for g in groups) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
