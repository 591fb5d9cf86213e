"""Where a run's time goes (`bench/profile.py`): stages measured by the systems, by the runner and by
the evaluator, summed per system into profile.md; the cascade's ASR says which of its parts took what."""
import pickle
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.profile import HARNESS, Profile, StageClock, model_seconds
from bench.types import Audio, Generation, Request, System


def test_stage_clock_sums_each_stage_over_calls():
    clock = StageClock()
    for _ in range(2):
        with clock("encoder"):
            time.sleep(0.01)
    with clock("decode"):
        pass
    assert set(clock.seconds) == {"encoder", "decode"}
    assert clock.seconds["encoder"] >= 0.02 > clock.seconds["decode"]


def test_a_model_call_is_split_into_its_reported_stages_and_the_rest():
    p = Profile()
    g = Generation(text="x", seconds={"asr": 1.0, "asr.encoder": 0.6, "asr.decode": 0.3, "llm": 0.5, "audio": 9.0})
    p.add_call("cascade", [g, g, None], wall=3.5)  # two items answered, one failed
    assert p.seconds[("cascade", "asr")] == 2.0 and p.seconds[("cascade", "asr.encoder")] == 1.2
    assert abs(p.seconds[("cascade", "other")] - 0.5) < 1e-9  # 3.5 s of wall, 3.0 s reported
    assert ("cascade", "audio") not in p.seconds  # a clip's duration is not time spent
    assert p.items["cascade"] == 2 and p.total("cascade") == 3.5  # the parts are inside their stage
    assert model_seconds(g.seconds) == 1.5
    p.add(HARNESS, "scoring", 0.5)
    md = p.markdown("t")
    assert "| cascade | 2 | 3.50 | 87.5 % | 1.750 |" in md
    assert "| cascade | asr | 2.00 | 57.1 % | 1.000 |" in md and "| cascade | · encoder | 1.20 |" in md
    assert md.index("| cascade | asr |") < md.index("· encoder") < md.index("| cascade | llm |")
    other = pickle.loads(pickle.dumps(p))  # torchrun ranks send theirs to rank 0
    assert p.merge([other]).seconds[("cascade", "asr")] == 4.0 and p.items["cascade"] == 4


class _Staged(System):
    """Sleeps in two stages it reports, and a little more that it does not."""

    name = "staged"

    def fingerprint(self) -> str:
        return "staged-1"

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        time.sleep(0.02 * len(requests))
        return [Generation(text=r.turn.gold_text, seconds={"encoder": 0.01, "llm": 0.005}) for r in requests]


def build_staged(ctx) -> _Staged:
    return _Staged()


def test_every_run_writes_its_profile_and_a_cached_rerun_leaves_it_alone(tmp_path, fakes_registered):
    import systems
    from bench.evaluate import Plan, evaluate

    systems.REGISTRY.register("staged", "tests.test_profile:build_staged")

    plan = Plan(systems=["staged", "echo"], tasks=["fake-qa"], output_dir=str(tmp_path), batch_size=4,
                cache=str(tmp_path / "c.sqlite"))
    result = evaluate(plan, progress=False, log=lambda _: None)
    md = (result.run_dir / "profile.md").read_text()
    lines = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): ln for ln in md.splitlines() if ln.startswith("|")}
    assert ("staged", "12") in lines and ("echo", "12") in lines
    for stage in ("encoder", "llm", "rest of the model call (loading, batching)", "audio: load, TTS, condition",
                  "cache writes"):
        assert ("staged", stage) in lines, stage
    assert ("(harness)", "scoring") in lines and ("(harness)", "report") in lines
    # the reported stages are what the system said (12 × 0.01 s); the rest is the unreported sleep
    enc = float(lines[("staged", "encoder")].split("|")[3])
    rest = float(lines[("staged", "rest of the model call (loading, batching)")].split("|")[3])
    assert abs(enc - 0.12) < 0.05 and rest >= 0.05
    mtime = (result.run_dir / "profile.md").stat().st_mtime_ns
    again = evaluate(plan, run_dir=result.run_dir, progress=False, log=lambda _: None)
    assert again.counts["generated"] == 0 and (result.run_dir / "profile.md").stat().st_mtime_ns == mtime


def test_the_ctc_asr_reports_its_encoder_and_decoding_time():
    from systems.asr.ctc import CTCASR, train_tokenizer

    asr = CTCASR.build(train_tokenizer(["a cat sat", "on the mat"], vocab_size=40), hidden=32, layers=1, heads=2, ffn=64)
    rng = np.random.default_rng(0)
    asr.transcribe([Audio(rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)])
    assert set(asr.last_seconds) == {"encoder", "decode"} and all(v >= 0 for v in asr.last_seconds.values())
