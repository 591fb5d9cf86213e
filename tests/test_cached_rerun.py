"""A fully cached rerun: systems built for their fingerprints load no weights (no ChatLLM, ASR,
Whisper, token-CTC or AudioChatLlama loader, not even torch), their fingerprints are those of the
systems loaded, and a rerun synthesises no speech, draws no plot and rewrites no file when nothing
changed."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from bench.types import Generation, Request, System

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SYSTEMS = ["text", "cascade", "cascade-tokens", "cascade-whisper", "audiochatllama",
                   "audiochatllama-continuous", "audiochatllama-whisper"]


@pytest.fixture
def no_loading(monkeypatch, tmp_path):
    """Every model loader raises (the calls are listed); the embedded assets' directories are never
    built (an identity needs only their pinned hashes)."""
    import systems.asr.whisper
    import systems.common
    from systems.asr.ctc import CTCASR
    from systems.asr.whisper import WhisperASR
    from systems.audiochatllama.bridge import TokenCTCASR
    from systems.audiochatllama.model import AudioChatLlama
    from systems.llm import ChatLLM

    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "asset-cache"))
    unbuilt = lambda asset, root=None: tmp_path / "never-built" / asset.name  # noqa: E731
    monkeypatch.setattr(systems.common, "resolve", unbuilt)
    monkeypatch.setattr(systems.asr.whisper, "resolve", unbuilt)
    calls: list[str] = []

    def forbidden(what):
        def call(*a, **k):
            calls.append(what)
            raise AssertionError(f"{what} was called")
        return call

    for owner, attr in ((ChatLLM, "load"), (ChatLLM, "_ensure"), (CTCASR, "from_pretrained"), (WhisperASR, "load"),
                        (WhisperASR, "__init__"), (TokenCTCASR, "load"), (AudioChatLlama, "load")):
        monkeypatch.setattr(owner, attr, forbidden(f"{getattr(owner, '__name__', owner)}.{attr}"))
    return calls


def _fingerprints(names, **options) -> dict[str, str]:
    from bench.config import Plan
    from bench.plugins import Context, build_system

    ctx = Context(**{**Plan().system_options(), **options})
    return {n: build_system(n, ctx).fingerprint() for n in names}


def test_default_systems_give_the_committed_fingerprints_without_loading(no_loading):
    fps = _fingerprints(DEFAULT_SYSTEMS + ["cascade-whisper-tokens", "audiochatllama-whisper-continuous"])
    assert no_loading == []
    # the smoke baseline was made by a run that loaded every one of these systems
    smoke = json.loads((ROOT / "results" / "baselines" / "smoke" / "config.json").read_text())["fingerprints"]
    assert {n: fps[n] for n in smoke} == smoke


def test_a_loaded_system_has_the_fingerprint_of_its_unloaded_build(tmp_path, monkeypatch, tiny):
    from bench.plugins import Context, build_system
    from systems.asr.ctc import CTCASR
    from systems.cascade import DEFAULT_CTC, Cascade
    from systems.common import llm_identity
    from systems.llm import ChatLLM, DecodeConfig
    from systems.text import TextTopline

    monkeypatch.setenv("AUDIOCHAT_BENCH_CACHE", str(tmp_path / "asset-cache"))
    d = tmp_path / "tiny-llm"
    tiny.model.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    loaded = ChatLLM.load(str(d))
    loaded.model  # noqa: B018  (reads the weights)
    assert loaded.identity == llm_identity(str(d))
    ctx = Context(llm=str(d), max_new_tokens=64)
    assert build_system("text", ctx).fingerprint() == TextTopline(loaded, DecodeConfig(64)).fingerprint()
    asr = CTCASR.from_pretrained(DEFAULT_CTC, decoder="greedy")
    assert (build_system("cascade", ctx, {"decoder": "greedy"}).fingerprint()
            == Cascade(asr, loaded, DecodeConfig(64)).fingerprint())


def test_building_the_default_systems_imports_no_torch(tmp_path):
    code = """
import sys
import bench.assets, systems.common, systems.asr.whisper
unbuilt = lambda asset, root=None: bench.assets.Path("/nonexistent") / asset.name
systems.common.resolve = systems.asr.whisper.resolve = unbuilt
from bench.plugins import Context, build_system
for name in %r:
    build_system(name, Context()).fingerprint()
heavy = sorted(m for m in ("torch", "transformers", "matplotlib", "peft") if m in sys.modules)
assert not heavy, heavy
""" % DEFAULT_SYSTEMS
    env = {**os.environ, "AUDIOCHAT_BENCH_CACHE": str(tmp_path / "asset-cache")}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


class StandIn(System):
    """Answers at once under a real system's fingerprint: fills the cache as that system would."""

    def __init__(self, name: str, fingerprint: str):
        self.name, self._fp = name, fingerprint

    def fingerprint(self) -> str:
        return self._fp

    def generate_batch(self, requests: Sequence[Request]) -> list[Generation]:
        heard = "what is the capital" if self.name == "cascade" else None
        return [Generation(text=f"{self.name}: paris", transcript=heard if r.turn.spoken else None,
                           seconds={"llm": 0.01}) for r in requests]


def _stamps(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "config.json"}


def test_a_fully_cached_rerun_loads_nothing_and_rewrites_nothing(tmp_path, no_loading, monkeypatch):
    import bench.plots
    import bench.tts
    from bench.evaluate import Plan, evaluate

    names = ["text", "cascade", "audiochatllama"]
    plan = Plan(systems=names, tasks=["spoken-qa"], conditions=["clean"], sweep_tasks=["spoken-qa"],
                sweep_conditions=["white-snr10"], limit=2, output_dir=str(tmp_path / "runs"),
                baselines=["cascade", "text"], bucket_systems=["cascade"], toplines=["text"])
    fps = _fingerprints(names)
    quiet = dict(progress=False, log=lambda _: None)
    first = evaluate(plan, built={n: StandIn(n, fps[n]) for n in names}, **quiet)
    assert first.counts["generated"] == 12 and first.counts["failed"] == 0
    pngs = sorted(p.name for p in first.run_dir.glob("plot-*.png"))
    assert {"plot-robustness-spoken-qa-white-snr.png", "plot-wer-buckets-spoken-qa.png"} <= set(pngs)

    monkeypatch.setattr(bench.tts, "engine", lambda: pytest.fail("a cached rerun synthesised speech"))
    monkeypatch.setattr(bench.plots, "_draw", lambda spec: pytest.fail("a cached rerun drew a plot"))
    old = 1_000_000_000_000_000_000  # 2001: whatever the rerun writes gets a new stamp
    for p in first.run_dir.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(old, old))
    before = _stamps(first.run_dir)

    again = evaluate(plan, run_dir=first.run_dir, **quiet)  # the real systems, built for their fingerprints
    assert no_loading == []
    assert again.counts == {"generated": 0, "cached": 12, "failed": 0}
    assert again.meta["fingerprints"] == first.meta["fingerprints"] == fps
    assert again.rows == first.rows
    assert _stamps(first.run_dir) == before  # plots, report, tables, audio: nothing rewritten

    fresh = evaluate(plan, **quiet)  # a new run directory: the same plots, from the cache of drawn plots
    assert no_loading == []
    assert sorted(p.name for p in fresh.run_dir.glob("plot-*.png")) == pngs
    assert all((fresh.run_dir / n).read_bytes() == (first.run_dir / n).read_bytes() for n in pngs)


def test_batched_aggregates_give_the_scalar_numbers_exactly():
    """The bootstrap's vectorised chrF, BLEU and ratio (`aggregate.batched`) equal sacrebleu's own
    computation bit for bit, edge cases (empty hypothesis or reference, no match) included."""
    import numpy as np
    from rouge_score import rouge_scorer

    from tasks import metrics as M

    hyps = ["The capital is Paris.", "A week has 7 days", "blue sky", "", "x", "Le chat est sur la table", "ok ok"]
    refs = ["Paris is the capital.", "Seven days", "The sky is blue", "nothing", "", "Le chat est sur le tapis", "ok"]
    w = np.vstack([np.random.default_rng(0).integers(0, 3, size=(500, len(hyps))), np.eye(len(hyps))])
    for stats, agg in ((M.chrf_statistics, M.chrf_from_statistics), (M.bleu_statistics, M.bleu_from_statistics)):
        totals = w @ np.array([stats(h, r if agg is M.chrf_from_statistics else [r]) for h, r in zip(hyps, refs)])
        assert np.array_equal(agg.batched(totals), [agg(t) for t in totals])
    ratios = w[:, :3] @ np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]])
    assert np.array_equal(M.ratio.batched(ratios), [M.ratio(t) for t in ratios], equal_nan=True)
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for _ in range(2):  # (the second time from the memo)
        for h, r in zip(hyps, refs):
            assert all(M.rouge(h, [r], k) == plain.score(r, h)[k].fmeasure for k in ("rouge1", "rouge2", "rougeL"))
