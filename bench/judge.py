"""A judge for open-ended answers (`run --judge SYSTEM`): off unless a judge is named.

Any system of the harness can judge (`--judge text`: the embedded LLM; an endpoint or a hub model
once those systems exist). After every system has answered, for each task that allows judging
(`task.judged`: summaries, open requests) the judge is asked, with a fixed, versioned prompt:
- per (item, answer): a 1-5 score of the answer against the references and the topline's answer;
- per (item, system, baseline): which of two answers is better, asked in both orders (A/B then
  B/A), so that a judge's preference for a position cancels out: a system wins an item only when
  both orders prefer it, loses only when both prefer the baseline, and ties otherwise.

The judge's replies are outputs like any other: stored in the run's cache under the judge's
fingerprint, a task named `judge:<task>` whose version carries `PROMPT_VERSION`, and an item id
that digests the whole prompt (so a changed answer, reference or topline answer is a new prompt).
A rerun is served from the cache; a killed run resumes where it stopped; `score` rebuilds the
judge's rows from the cache alone. A reply that does not follow the format is not guessed at: its
item is left out of `judge_score` / `judge_win_vs_*` and counted in `judge_unparsed`.
"""
from __future__ import annotations

import hashlib
import re
from typing import Mapping

from bench.types import Generation, Item, Metric, Task, Turn

PROMPT_VERSION = "judge-v2"  # v2: the judge is asked for MAX_NEW_TOKENS (v1 keys said so; it generated the run's cap)
MAX_NEW_TOKENS = 24  # a verdict is a digit or a letter; room for "Score: 4" and a closing period
INSTRUCTION = "You are a strict and fair grader of answers. Reply in exactly the format asked for."

SCORE_PROMPT = """Grade the ANSWER to the REQUEST below.

REQUEST: {request}
REFERENCE ANSWER(S):
{references}
ANSWER TO GRADE:
{answer}

How good is the ANSWER, compared with the reference answer(s)? Reply with a single digit from 1 \
(wrong or useless) to 5 (as good as the references), and nothing else."""

PAIR_PROMPT = """Compare two answers to the REQUEST below.

REQUEST: {request}
REFERENCE ANSWER(S):
{references}
ANSWER A:
{a}
ANSWER B:
{b}

Which answer is better, given the reference answer(s)? Reply with exactly one of: A, B, tie."""

_SCORE = re.compile(r"^\W*(?:score\W*)?([1-5])(?:\s*/\s*5)?\W*$", re.IGNORECASE)
_PAIR = re.compile(r"^\W*(?:answer\s+)?(A|B|tie)\W*$", re.IGNORECASE)


def parse_score(reply: str) -> int | None:
    """The 1-5 score of a reply's first line, or None when it is not one."""
    m = _SCORE.match(reply.strip().split("\n")[0]) if reply.strip() else None
    return int(m.group(1)) if m else None


def parse_pair(reply: str) -> str | None:
    """"A", "B" or "tie" from a reply's first line, or None."""
    m = _PAIR.match(reply.strip().split("\n")[0]) if reply.strip() else None
    return None if m is None else m.group(1).upper() if m.group(1).lower() != "tie" else "tie"


def _request(item: Item) -> str:
    turns = [t.gold_text for t in (*item.history, item.turn) if t.role == "user"]
    text = "\n".join(turns)
    return f"{item.instruction}\n{text}" if item.instruction else text


def _references(item: Item, topline: Generation | None) -> str:
    refs = list(item.references) + ([topline.text] if topline is not None else [])
    return "\n".join(f"- {r}" for r in refs) if refs else "(none)"


def score_prompt(item: Item, answer: str, topline: Generation | None) -> str:
    return SCORE_PROMPT.format(request=_request(item), references=_references(item, topline), answer=answer)


def pair_prompt(item: Item, a: str, b: str, topline: Generation | None) -> str:
    return PAIR_PROMPT.format(request=_request(item), references=_references(item, topline), a=a, b=b)


class JudgeTask(Task):
    """The judge's view of a task: items are prompts (typed turns); their id digests the prompt."""

    def __init__(self, task: Task):
        self.name, self.version = f"judge:{task.name}", f"{PROMPT_VERSION}-{task.version}"

    @staticmethod
    def item(source: Item, kind: str, prompt: str) -> Item:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:20]
        return Item(f"{source.id}|{kind}|{digest}", Turn("user", text=prompt), instruction=INSTRUCTION)


def _roles(plan, systems) -> tuple[str | None, str | None]:
    """(the topline, whose answer joins the references; the baseline every other system is compared with)."""
    topline = next((s for s in plan.toplines if s in systems), None)
    baseline = next((s for s in plan.baselines if s in systems), None)
    return topline, baseline


def prompts(task: Task, items: list[Item], gens: Mapping[str, Mapping[str, Generation | None]],
            topline: str | None, baseline: str | None) -> list[Item]:
    """Every judge prompt for one task and condition (`gens`: system → item id → generation)."""
    out: dict[str, Item] = {}
    for it in items:
        top = gens[topline].get(it.id) if topline else None
        for system, by_id in gens.items():
            g = by_id.get(it.id)
            if g is None:
                continue
            ref = None if system == topline else top
            for p in [("score", score_prompt(it, g.text, ref))] + (
                    [] if baseline is None or system == baseline or gens[baseline].get(it.id) is None else
                    [("pair", pair_prompt(it, g.text, gens[baseline][it.id].text, top)),
                     ("pair", pair_prompt(it, gens[baseline][it.id].text, g.text, top))]):
                j = JudgeTask.item(it, *p)
                out[j.id] = j
    return list(out.values())


def _gens(records: Mapping[str, Mapping]) -> dict[str, dict[str, Generation | None]]:
    return {s: {i: (r.generation if r else None) for i, r in recs.items()} for s, recs in records.items()}


def _records(cache, fingerprints, task, items, conditions, gconf):
    from bench.runner import read_records, slots_for

    recs = {s: read_records(cache, slots_for(fp, task, items, conditions, gconf)) for s, fp in fingerprints.items()}
    return {c: {s: {it.id: r[(c, it.id)] for it in items} for s, r in recs.items()} for c in conditions}


def judge_gconf() -> dict:
    from bench.runner import gen_config

    return gen_config(MAX_NEW_TOKENS)


def run_judge(judge, plan, tasks: dict, fingerprints: dict, cache, gconf_for, progress: bool = True) -> dict:
    """Ask `judge` every prompt of every judged task that the cache lacks (batched, committed per
    batch: resumable); `gconf_for(task)`: the generation config of the answers judged. Returns
    {"fingerprint", "generated", "cached", "failed"} for config.json."""
    from bench.runner import GenStats, generate, slots_for

    stats, jconf = GenStats(), judge_gconf()
    for tname, (task, items) in tasks.items():
        if not getattr(task, "judged", False):
            continue
        conditions = plan.conditions_for(tname)
        jt = JudgeTask(task)
        for c, records in _records(cache, fingerprints, task, items, conditions, gconf_for(task)).items():
            gens = _gens(records)
            asks = prompts(task, items, gens, *_roles(plan, gens))
            generate(judge, jt, slots_for(judge.fingerprint(), jt, asks, ["clean"], jconf), cache, jconf,
                     plan.batch_size, stats, progress=progress)
    return {"fingerprint": judge.fingerprint(), "system": plan.judge,
            **{k: getattr(stats, k) for k in ("generated", "cached", "failed")}}


def judge_rows(plan, tasks: dict, records: dict, cache, judge_fp: str) -> list[dict]:
    """The judge's rows from the cache alone: `judge_score` (1-5), `judge_win_vs_<baseline>` (1 win,
    ½ tie, 0 loss; both orders) and `judge_unparsed`, per system, task and condition, with CIs."""
    from bench.runner import read_records, slots_for
    from bench.scoring import score_task

    jconf, rows = judge_gconf(), []
    for tname, (task, items) in tasks.items():
        if not getattr(task, "judged", False):
            continue
        jt = JudgeTask(task)
        for c in plan.conditions_for(tname):
            gens = _gens(records.get((tname, c), {}))
            if not gens:
                continue
            topline, baseline = _roles(plan, gens)
            asks = prompts(task, items, gens, topline, baseline)
            stored = read_records(cache, slots_for(judge_fp, jt, asks, ["clean"], jconf))
            replies = {a.turn.text: (r.generation.text if (r := stored[("clean", a.id)]) and r.generation else None)
                       for a in asks}
            view = _JudgeView(task, replies, gens, topline, baseline)
            rows.extend(r for r in score_task(view, c, items, gens, plan.baselines)
                        if not (r["system"] == baseline and r["metric"].startswith("judge_win")))  # not vs itself
    return rows


class _JudgeView(Task):
    """A task whose metrics read the judge's stored replies (looked up by the prompt each one rebuilds)."""

    def __init__(self, task: Task, replies: dict[str, str | None], gens, topline, baseline):
        self.name, self.version, self.primary = task.name, task.version, task.primary_metric()
        self.replies, self.gens, self.topline = replies, gens, topline

        def top(item, system_gen):
            g = gens[topline].get(item.id) if topline else None
            return None if g is None or g is system_gen else g

        def score(item, gen, ctx):
            reply = replies.get(score_prompt(item, gen.text, top(item, gen)))
            return None if reply is None else parse_score(reply)

        def unparsed(item, gen, ctx):
            reply = replies.get(score_prompt(item, gen.text, top(item, gen)))
            return None if reply is None else float(parse_score(reply) is None)

        metrics = [Metric("judge_score", "item", True, score), Metric("judge_unparsed", "item", False, unparsed)]
        if baseline is not None:
            def win(item, gen, ctx):
                other = ctx.get(baseline)
                if other is None or other is gen:
                    return None
                t = gens[topline].get(item.id) if topline else None
                first = replies.get(pair_prompt(item, gen.text, other.text, t))
                second = replies.get(pair_prompt(item, other.text, gen.text, t))
                v1, v2 = parse_pair(first or ""), parse_pair(second or "")
                if v1 is None or v2 is None:
                    return None
                mine = (v1 == "A") + (v2 == "B")  # orders in which this system's answer was preferred
                theirs = (v1 == "B") + (v2 == "A")
                return 1.0 if mine == 2 else 0.0 if theirs == 2 else 0.5

            metrics.append(Metric(f"judge_win_vs_{baseline}", "item", True, win, needs=baseline))
        self.metrics = tuple(metrics)
