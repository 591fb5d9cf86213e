"""The topline is a role of the run, not a system's name in a task: a metric that `needs` TOPLINE and a
scoring task's `reference_system` are bound to the first of the plan's `toplines` (a suite names them)."""
import json

import pytest

from bench.evaluate import Plan, bind_roles, build_tasks, load_plan
from bench.scoring import score_task
from bench.types import TOPLINE, Generation, Item, Metric, Task, Turn


class Agree(Task):
    name, version = "agree", "1"
    metrics = (Metric("agree", "item", True,
                      lambda it, g, c: None if c.get(TOPLINE) is None else float(g.text == c[TOPLINE].text),
                      needs=TOPLINE),)


def _gens(**texts):
    return {s: {"i": Generation(text=t)} for s, t in texts.items()}


def test_plan_roles_prefer_a_topline_that_runs():
    assert Plan(systems=["a", "b"], toplines=["x", "b"]).roles() == {TOPLINE: "b"}
    assert Plan(systems=["a"], toplines=["x", "b"]).roles() == {TOPLINE: "x"}  # a reference need not be compared
    assert Plan(systems=["a"]).roles() == {}


def test_the_metric_compares_with_whichever_system_plays_the_topline():
    items = [Item(id="i", turn=Turn("user", text="q"))]
    gens = _gens(a="yes", b="no", c="yes")
    rows = lambda toplines: {r["system"]: r["value"] for r in score_task(
        bind_roles(Agree(), Plan(systems=list(gens), toplines=toplines).roles()), "clean", items, gens, ["b"])
        if r["baseline"] is None}
    assert rows(["a"]) == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert rows(["b"]) == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert rows([]) == {}  # no topline: the metric does not apply
    # agreement with the topline is not compared against the topline itself
    diffs = score_task(bind_roles(Agree(), {TOPLINE: "b"}), "clean", items, gens, ["b"])
    assert not [r for r in diffs if r["baseline"] == "b"]
    assert Agree.metrics[0].bound is None  # the task's own declaration is left as it was


def test_a_scoring_task_scores_the_topline_of_the_run():
    plan = Plan(systems=["cascade"], tasks=["response-ppl"], toplines=["text"], limit=1)
    (task, _), = build_tasks(plan).values()
    assert task.reference_system == "text" and {m.source for m in task.metrics} == {None, "text"}
    with pytest.raises(ValueError, match="scores the answers of the run's topline"):
        build_tasks(Plan(systems=["cascade"], tasks=["response-ppl"], limit=1))


def test_runs_from_before_the_role_read_their_topline_from_the_reference_they_scored(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "config": {"systems": ["text", "cascade"], "tasks": ["response-ppl"], "system_args": {}},
        "reference_fingerprints": {"text": "smollm2@abc:float32"}, "status": "finished"}))
    plan, record = load_plan(tmp_path)
    assert plan.toplines == ["text"] and plan.roles() == {TOPLINE: "text"} and record.version == 1


def test_the_topline_role_is_in_the_run_identity_and_the_rest_of_the_list_is_not():
    """The role sets the values of the agreement metrics and response-ppl (no row names it); which other
    systems are listed as toplines only changes how the headline shows them."""
    plan = lambda toplines: Plan(systems=["text", "cascade"], tasks=["spoken-qa"], toplines=toplines).identity()
    assert plan(["text"]) == plan(["text", "cascade"]) == "babfe0859e18"  # the identity runs had before the role
    assert plan(["cascade"]) != plan(["text"]) and plan([]) != plan(["text"])
