"""VoiceBench's scoring rules, implemented here (its code is not a dependency).

- Multiple choice (openbookqa, mmsu): the option letter is read from the answer by a strict parser
  (`parse_choice`). VoiceBench's own evaluator (src/evaluator/mcq.py, MatthewCYM/VoiceBench) replaces
  an answer it cannot parse by a random letter; here an unparsable answer is wrong, and the share of
  such answers is a metric of its own (`mcq_unparsed`). No scorer guesses.
- IFEval (ifeval): Google's rule-based instruction checks (the copy in VoiceBench's
  src/evaluator/instruction_following_eval/instructions.py), strict variant, for the instruction
  types in `IFEVAL_CHECKS`. The types left out need a language detector or NLTK's sentence/word
  tokenisers to be faithful (change_case:*, language:response_language,
  length_constraints:number_sentences, length_constraints:nth_paragraph_first_word,
  combination:two_responses); an item with any of them is not scored (its row's `n` says how many
  were), never scored by a guess.
- sd-qa: VoiceBench scores it with GPT-4o-mini as a judge and PEDANT; here it is scored with the
  harness's QA accuracy (gold answer contained), EM and F1 against the `reference` column.
"""
from __future__ import annotations

import json
import re
from collections import Counter

from bench.types import Metric

# ------------------------------------------------------------------ multiple choice
CHOICES = "ABCD"
_BARE = re.compile(r"^\W*\(?([A-Da-d])\)?\W*$")  # the whole answer is one letter: "B", "(b)", "**C.**"
_LEADING = re.compile(r"^\W*\(?([A-D])(?:[.):]|\s*[-–—])(?:\s|$)")  # "B. Paris", "(C) ...", "D) ..."
# "the answer is B", "Answer: (C)", "option D", "the correct choice is A." (upper-case letter only:
# "the answer is a" is English, not an option)
_PHRASE = re.compile(r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be))?\s*:?\s*(?:option\s+)?"
                     r"\*{0,2}\(?([A-D])\)?\*{0,2}(?![\w'])", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """The option letter (A-D) an answer gives, or None when it names none or more than one."""
    text = text.strip()
    if m := _BARE.match(text):
        return m.group(1).upper()
    if m := _LEADING.match(text):
        return m.group(1)
    found = {m.group(1) for m in _PHRASE.finditer(text) if m.group(1).isupper()}
    return found.pop() if len(found) == 1 else None


def _mcq_correct(item, gen, ctx) -> float:
    letter = parse_choice(gen.text)
    return float(letter is not None and letter == item.references[0])  # unparsable: wrong


MCQ_METRICS = (
    Metric("mcq_accuracy", "item", True, _mcq_correct),
    Metric("mcq_unparsed", "item", False, lambda it, g, c: float(parse_choice(g.text) is None)),
)


# ------------------------------------------------------------------ IFEval
def _compare(n: int, relation: str, threshold: int) -> bool:
    if relation == "less than":
        return n < threshold
    if relation == "at least":
        return n >= threshold
    raise ValueError(f"unknown IFEval relation {relation!r}")


def _postscript(r: str, postscript_marker: str) -> bool:
    pattern = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}.get(
        postscript_marker, r"\s*" + postscript_marker.lower() + r".*$")
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def _paragraphs(r: str, num_paragraphs: int) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    count = len(parts)
    for i, p in enumerate(parts):
        if not p.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def _highlights(r: str, num_highlights: int) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= num_highlights


def _json(r: str) -> bool:
    r = r.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        r = r.removeprefix(prefix)
    try:
        json.loads(r.removesuffix("```").strip())
    except ValueError:
        return False
    return True


_CONSTRAINED = ("My answer is yes.", "My answer is no.", "My answer is maybe.")

# instruction id → check(response, **kwargs); kwargs as in the dataset's `kwargs` column
IFEVAL_CHECKS = {
    "punctuation:no_comma": lambda r: not re.search(r"\,", r),
    "keywords:existence": lambda r, keywords: all(re.search(k, r, flags=re.IGNORECASE) for k in keywords),
    "keywords:forbidden_words": lambda r, forbidden_words: not any(
        re.search(r"\b" + w + r"\b", r, flags=re.IGNORECASE) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation: _compare(
        len(re.findall(keyword, r, flags=re.IGNORECASE)), relation, frequency),
    "keywords:letter_frequency": lambda r, letter, let_frequency, let_relation: _compare(
        Counter(r.lower())[letter.lower()], let_relation, let_frequency),
    "length_constraints:number_words": lambda r, num_words, relation: _compare(
        len(re.findall(r"\w+", r)), relation, num_words),  # nltk RegexpTokenizer(r"\w+") upstream
    "length_constraints:number_paragraphs": _paragraphs,
    "detectable_content:number_placeholders": lambda r, num_placeholders: len(
        re.findall(r"\[.*?\]", r)) >= num_placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": lambda r, num_bullets: len(re.findall(
        r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)) == num_bullets,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": lambda r, section_spliter, num_sections: len(
        re.split(r"\s?" + section_spliter.strip() + r"\s?\d+\s?", r)) - 1 >= num_sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": lambda r: any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r)),
    "detectable_format:constrained_response": lambda r: any(c in r.strip() for c in _CONSTRAINED),
    "startend:end_checker": lambda r, end_phrase: r.strip().strip('"').lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "combination:repeat_prompt": lambda r, prompt_to_repeat: r.strip().lower().startswith(
        prompt_to_repeat.strip().lower()),
}


def ifeval_followed(response: str, instruction_ids, kwargs) -> list[bool] | None:
    """Strict IFEval: whether `response` follows each instruction; None when any instruction's type
    is not implemented here (the item is then not scored)."""
    if any(i not in IFEVAL_CHECKS for i in instruction_ids):
        return None
    out = []
    for inst, kw in zip(instruction_ids, kwargs):
        kw = {k: v for k, v in (kw or {}).items() if v}  # as upstream: unset (None) arguments dropped
        out.append(bool(response.strip()) and bool(IFEVAL_CHECKS[inst](response, **kw)))
    return out


def _followed(item, gen):
    return ifeval_followed(gen.text, item.meta["instruction_id_list"], item.meta["kwargs"])


def _prompt_level(item, gen, ctx):
    f = _followed(item, gen)
    return None if f is None else float(all(f))


def _instruction_level(item, gen, ctx):
    f = _followed(item, gen)
    return None if f is None else (sum(f), len(f))


IFEVAL_METRICS = (
    Metric("ifeval_prompt_strict", "item", True, _prompt_level),
    Metric("ifeval_instruction_strict", "corpus", True, _instruction_level,
           lambda t: float(t[0] / t[1]) if t[1] else float("nan")),
)
