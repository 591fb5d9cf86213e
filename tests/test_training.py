"""The one training loop (systems/training.py) under each of the three recipes, on tiny models: the loss
falls through it; a run killed after k steps resumes to exactly the state of an uninterrupted run
(weights, optimiser, random state, log); checkpoint folders in the layouts from before the loop, and the
committed checkpoints, read back."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from systems import training
from tests.e2e_tiny import ROWS, tiny_model

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "she reads a book every night",
             "we walked to the river"]
TEXTS = [r["transcript"] for r in ROWS]
RECIPES = ["asr", "bridge", "e2e"]
FALLS_IN = {"asr": 12, "bridge": 40, "e2e": 30}  # steps (the bridge's and e2e's take milliseconds)


@pytest.fixture(scope="module")
def llm():
    from tests.fakes import tiny_llm

    return tiny_llm()


@pytest.fixture
def recipe(request, monkeypatch, llm):
    """(config maker, trainer) of a recipe on a tiny model, espeak speech and a few sentences."""
    if request.param == "asr":
        from systems.asr import train as T

        monkeypatch.setattr(T, "corpus", lambda cfg: SENTENCES)
        monkeypatch.setattr(T, "dev_set", lambda cfg: [])
        base = {**T.PRESETS["tiny"], "voices": "espeak", "log_every": 1, "dropout": 0.1}  # dropout: torch's RNG at work
        return (lambda **kw: T.ASRTrainConfig(**{**base, **kw}),
                lambda cfg, out: T.train(cfg, out, progress=False, given=("steps",)))  # as if typed: --steps
    if request.param == "bridge":
        from systems.audiochatllama import train_bridge as B
        from tests.test_bridge import tiny_token_encoder

        base = dict(batch_size=2, warmup=1, log_every=1, eval_every=1000, dev_size=2, workers=0, noise_prob=0.0,
                    threads=1, voices_per_text=1, voices="espeak", mask_states=True, lr=1e-2)
        return (lambda **kw: B.BridgeTrainConfig(**{**base, **kw}),
                lambda cfg, out: B.train(cfg, out, texts=TEXTS, tokenizer=llm.tokenizer,
                                         encoder=tiny_token_encoder(llm.tokenizer), progress=False))
    from systems.audiochatllama import train as E

    base = dict(batch_size=4, warmup=1, log_every=1, noise_prob=0.0, voices="espeak", lr=3e-3)
    return lambda **kw: E.E2ETrainConfig(**{**base, **kw}), lambda cfg, out: E.train(cfg, out, model=tiny_model(), rows=ROWS)


def _log(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", RECIPES, indirect=True)
def test_a_tiny_models_loss_falls_through_the_one_loop(recipe, tmp_path, request):
    make, train = recipe
    n = FALLS_IN[request.node.callspec.params["recipe"]]
    result = train(make(steps=n, ckpt_every=100), tmp_path)
    losses = [e["loss"] for e in _log(tmp_path)]
    assert result["step"] == n and len(losses) == n and np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    record = json.loads((tmp_path / "ckpt" / training.RECORD).read_text())
    assert record["layout"] == training.LAYOUT and record["step"] == n and record["config"]["steps"] == n


class Killed(Exception):
    pass


def _same_checkpoint(a: Path, b: Path) -> None:
    """The two checkpoints hold equal tensors: weights, optimiser state, random state."""
    for f in sorted(p.name for p in a.glob("*.safetensors")):
        wa, wb = load_file(str(a / f)), load_file(str(b / f))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    sa, sb = (torch.load(d / "trainer_state.pt", weights_only=True) for d in (a, b))
    assert sa["step"] == sb["step"] and torch.equal(sa["rng"], sb["rng"])
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i, st in oa["state"].items():
        assert st.keys() == ob["state"][i].keys() and all(torch.equal(v, ob["state"][i][k]) for k, v in st.items())


@pytest.mark.parametrize("recipe", RECIPES, indirect=True)
def test_a_run_killed_after_k_steps_resumes_to_the_state_of_an_uninterrupted_run(recipe, tmp_path, monkeypatch):
    make, train = recipe
    train(make(steps=5, ckpt_every=2), tmp_path / "whole")
    step, taken = training.optimizer_step, []

    def dies_in_step_4(*args):
        if len(taken) == 3:
            raise Killed
        taken.append(step(*args))

    monkeypatch.setattr(training, "optimizer_step", dies_in_step_4)
    with pytest.raises(Killed):
        train(make(steps=5, ckpt_every=2), tmp_path / "killed")
    monkeypatch.setattr(training, "optimizer_step", step)
    assert json.loads((tmp_path / "killed" / "ckpt" / training.RECORD).read_text())["step"] == 2
    assert train(make(steps=5, ckpt_every=2), tmp_path / "killed")["step"] == 5
    _same_checkpoint(tmp_path / "whole" / "ckpt", tmp_path / "killed" / "ckpt")
    strip = lambda log: [(e["step"], e["loss"], e["lr"]) for e in log]
    assert strip(_log(tmp_path / "killed")) == strip(_log(tmp_path / "whole"))  # step 3 logged once, as before


def _as_before_the_loop(name: str, ckpt: Path) -> None:
    """Rewrite a checkpoint as its recipe saved it before the one loop: no grad_clip or voices option, no
    random state, and the record where each recipe kept it."""
    record = json.loads((ckpt / training.RECORD).read_text())
    config = {k: v for k, v in record["config"].items() if k not in ("grad_clip", "voices")}
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    torch.save({"optimizer": state["optimizer"], "step": state["step"]}, ckpt / "trainer_state.pt")
    common = {"step": record["step"], "start_step": record["start_step"]}
    if name == "asr":  # the last log line's fields at the top level
        (ckpt / training.RECORD).write_text(json.dumps({"config": config, **common, **record["last_log"]}))
    elif name == "bridge":
        (ckpt / training.RECORD).write_text(json.dumps({"config": config, **common, "last_log": record["last_log"]}))
    else:  # the model's config.json, the config under "train"
        (ckpt / training.RECORD).unlink()
        meta = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps({**meta, "train": config}))


@pytest.mark.parametrize("recipe", RECIPES, indirect=True)
def test_a_run_folder_in_the_layout_before_the_loop_resumes_and_is_saved_in_the_new_one(recipe, tmp_path, request):
    name = request.node.callspec.params["recipe"]
    make, train = recipe
    train(make(steps=2, ckpt_every=2), tmp_path)
    _as_before_the_loop(name, tmp_path / "ckpt")
    assert training.read_record(tmp_path / "ckpt")["step"] == 2
    assert train(make(steps=3, ckpt_every=2), tmp_path)["step"] == 3
    record = json.loads((tmp_path / "ckpt" / training.RECORD).read_text())
    # options the old run predates: what it ran with (the clip each recipe hard-coded, espeak alone)
    assert record["layout"] == training.LAYOUT and record["step"] == 3
    assert record["config"]["grad_clip"] == (1.0 if name == "e2e" else 5.0) and record["config"]["voices"] == "espeak"
    assert [e["step"] for e in _log(tmp_path)] == [1, 2, 3]


def test_every_committed_checkpoint_reads_back_into_its_recipes_config():
    from systems.asr.train import OLD_DEFAULTS, ASRTrainConfig
    from systems.audiochatllama.train import E2ETrainConfig
    from systems.audiochatllama.train_bridge import BridgeTrainConfig

    seen = set()
    for d in sorted(p for p in (ROOT / "systems" / "checkpoints").iterdir() if p.is_dir()):
        cls = (E2ETrainConfig if (d / "trainable.safetensors").exists() else
               BridgeTrainConfig if (d / "bridge.json").exists() else ASRTrainConfig)
        cfg, record = training.saved_config(cls, d, old_defaults=OLD_DEFAULTS)
        assert record["step"] > 0 and cfg.steps > 0 and cfg.grad_clip == (1.0 if cls is E2ETrainConfig else 5.0), d
        seen.add(cls)
    assert len(seen) == 3


def test_batches_are_a_function_of_their_step_whichever_process_makes_them():
    """What a resumed run draws: the batches from step 2 on, made by two DataLoader workers, are those an
    uninterrupted run draws in its training process."""
    from systems.audiochatllama.train import E2ETrainConfig, batches

    def first(n: int, workers: int, first_step: int):
        data = batches(ROWS, E2ETrainConfig(batch_size=2, noise_prob=0.3, voices="espeak", workers=workers), "0-0",
                       first_step=first_step)
        return [next(data) for _ in range(n)]

    whole, resumed = first(5, 0, 0)[2:], first(3, 2, 2)
    for (ra, ta, _), (rb, tb, _) in zip(whole, resumed):
        assert ta == tb and all(np.array_equal(a.turn.audio.samples, b.turn.audio.samples) for a, b in zip(ra, rb))
