"""Every metric of each system on the built-in `asr` task of a run, by voice group (the accent of the
test voice: `en-us+f3` → `en-us`), from the run's stored outputs through the evaluator.

    python scripts/wer_by_voice.py results/runs/<run-id> [--task asr] [--metric wer]
"""
import argparse

from bench.evaluate import group_rows, score_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--task", default="asr")
    ap.add_argument("--metric", default="wer")
    args = ap.parse_args()
    result = score_run(args.run_dir, write=False)

    def accent(item):
        audio = item.turn.audio
        return audio.voice.split("+")[0] if getattr(audio, "voice", None) else None

    rows = [r for r in group_rows(result, args.task, accent, "voice") if r["metric"] == args.metric]
    every = {r["system"]: r for r in result.rows
             if (r["task"], r["metric"], r["condition"]) == (args.task, args.metric, "clean")
             and not r.get("baseline") and not r.get("bucket")}
    groups = sorted({r["voice"] for r in rows})
    print(f"| system | {' | '.join(groups)} | all |")
    print("|---" * (len(groups) + 2) + "|")
    cell = {(r["system"], r["voice"]): r["value"] for r in rows}
    for s in sorted(every):
        print(f"| {s} | " + " | ".join(f"{100 * cell[(s, g)]:.1f}" if (s, g) in cell else "–" for g in groups)
              + f" | {100 * every[s]['value']:.1f} |")


if __name__ == "__main__":
    main()
