"""VoiceBench's scoring rules, implemented here (its code is not a dependency).

- Multiple choice (openbookqa, mmsu): the option letter is read from the answer by a strict parser
  (`parse_choice`: every plain statement of one letter, never a guess). VoiceBench's own evaluator
  (src/evaluator/mcq.py, MatthewCYM/VoiceBench) replaces an answer it cannot parse by an unseeded
  random letter; here an unparsable answer is wrong, the share of such answers is a metric of its own
  (`mcq_unparsed`), and `mcq_accuracy_voicebench` is the exact expectation of VoiceBench's number
  (accuracy + unparsed / 4, no draw), to set beside a published one.
- IFEval (ifeval): Google's rule-based instruction checks (the copy in VoiceBench's
  src/evaluator/instruction_following_eval/instructions.py), strict and loose, prompt and instruction
  level; the headline `ifeval` is their mean, as VoiceBench reports it. The language and English-case
  checks use langdetect, seeded. Left out: the types that need NLTK's tokenisers to be faithful
  (change_case:capital_word_frequency, length_constraints:number_sentences); an item with one of them
  is not scored (its row's `n` says how many were), never scored by a guess.
- sd-qa: VoiceBench scores it with GPT-4o-mini as a judge and PEDANT; here it is scored with the
  harness's QA accuracy (gold answer contained), EM and F1 against the `reference` column.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache

from bench.types import Metric

# ------------------------------------------------------------------ multiple choice
CHOICES = "ABCD"
_OPEN = r"[\s:*_\"'“‘(\[\-–—]*"  # between a phrase and its letter: "Answer: **(B)", "answer - b"
# a letter as an answer: B, C, D (any case: "the answer is b" names option B); "a" only where nothing
# follows it but punctuation (then it cannot be the article: "the answer is a good question")
_LETTER = r"(?:([A-Db-d])(?![\w'’])|(a)(?=[\s*_\"'”’)\]]*(?:$|[.,:;!?\n])))"
_KEY = (r"\b(?:answer(?:\s+to\s+(?:the|this)\s+question)?|option|choice)"
        r"(?:\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be|seems\s+to\s+be|has\s+to\s+be))?"
        r"(?:\s+(?:actually|probably|likely|most\s+likely|definitely|clearly|therefore|then))?")
_VERB = r"\b(?:choose|chose|select|pick|go\s+with|going\s+with|say|opt\s+for|guess|answer\s+with)"
_PHRASE = re.compile(rf"(?i:{_KEY}|{_VERB}){_OPEN}(?:(?i:option)\s+{_OPEN})?{_LETTER}")  # the words in any case
# "B is correct" opening the answer or a sentence (not "Vitamin C is the best")
_IS_RIGHT = re.compile(r"(?:^|[.!?:]\s+|\n)[*_(]*([A-Da-d])\)?[*_]*\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))\b")
_ITS = re.compile(r"\b(?i:it(?:'|’|\s+i)s\s+(?:option\s+)?)\**\(?([A-D])(?![\w'’])\)?\**(?=\s*(?:$|[.,:;!?\n]))")
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*([A-Da-d])\s*\}")
_BARE = re.compile(r"^\W*\(?([A-Da-d])\)?\W*$")  # the whole answer is one letter: "B", "(b)", "**C.**"
# an answer that opens with its letter: "B. Paris", "(c) ...", "**D)** ...", "B, because", "B\n\nExplanation";
# a comma or "and"/"or" leading to another letter is a list ("A, B and C are ..."), not an answer
_LEADING = re.compile(r"^[\s*_\"'“(\[]*([A-Da-d])(?:\*\*|__)?\)?(?:\*\*|__)?\s*"
                      r"(?:[.):]|,(?!\s*(?:[A-Da-d]\b|and\b|or\b))|\s[-–—]\s|\n)")


def parse_choice(text: str) -> str | None:
    """The option letter (A-D) an answer plainly states, or None when it states none or more than one.

    Read: the answer being one letter; an answer opening with its letter (`B. Paris`, `b) Paris`,
    `B, because ...`, `B` then a new line); a letter after an answer phrase or a verb of choosing (`the
    answer is b`, `**Answer:** B`, `the answer is actually C`, `I'd go with D`, `I would choose option
    A`), `B is correct`, `it's B.`, `\boxed{B}`. Every letter the answer states must be the same one
    (`the answer is B, not option C` is None). Lower-case `a` counts only where nothing but punctuation
    follows it (`the answer is a.`), never before a word (the article).
    """
    text = text.strip()
    if m := _BARE.match(text):
        return m.group(1).upper()
    found = set()
    if m := _LEADING.match(text):
        found.add(m.group(1).upper())
    for m in _PHRASE.finditer(text):
        found.add((m.group(1) or m.group(2)).upper())
    for pattern in (_IS_RIGHT, _ITS, _BOXED):
        found |= {m.group(1).upper() for m in pattern.finditer(text)}
    return found.pop() if len(found) == 1 else None


def _mcq_correct(item, gen, ctx) -> float:
    letter = parse_choice(gen.text)
    return float(letter is not None and letter == item.references[0])  # unparsable: wrong


def _mcq_voicebench(item, gen, ctx) -> float:
    """This item's expected score under VoiceBench's fallback (an unparsed answer gets a uniformly random
    letter of A-D, right with probability 1/4): its mean is VoiceBench's expected accuracy, with no draw."""
    letter = parse_choice(gen.text)
    return 1 / len(CHOICES) if letter is None else float(letter == item.references[0])


MCQ_METRICS = (
    Metric("mcq_accuracy", "item", True, _mcq_correct),
    Metric("mcq_unparsed", "item", False, lambda it, g, c: float(parse_choice(g.text) is None)),
    Metric("mcq_accuracy_voicebench", "item", True, _mcq_voicebench),
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


def _two_responses(r: str) -> bool:
    responses = r.split("******")
    valid = []
    for i, part in enumerate(responses):
        if part.strip():
            valid.append(part)
        elif i not in (0, len(responses) - 1):
            return False
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def _nth_paragraph_first_word(r: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = re.split(r"\n\n", r)
    count = sum(1 for p in paragraphs if p.strip())
    if nth_paragraph > count or not paragraphs[nth_paragraph - 1].strip():
        return False
    word = paragraphs[nth_paragraph - 1].strip().split()[0].strip().lstrip("'").lstrip('"')
    head = re.match(r"[^.,?!'\"]*", word).group(0).lower()  # up to the first punctuation mark, as upstream
    return count == num_paragraphs and head == first_word.lower()


def _language_is(r: str, language: str) -> bool:
    """langdetect's verdict, seeded (upstream leaves it unseeded: its answer on short or mixed text can
    change from run to run); text it cannot read counts as followed, as upstream."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        return detect(r) == language
    except LangDetectException:
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
        Counter(r.lower())[letter.strip().lower()], let_relation, let_frequency),  # stripped, as upstream
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
    "combination:two_responses": _two_responses,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "language:response_language": lambda r, language: _language_is(r, language),
    "change_case:english_capital": lambda r: r.isupper() and _language_is(r, "en"),
    "change_case:english_lowercase": lambda r: r.islower() and _language_is(r, "en"),
}


def _loose_variants(r: str) -> list[str]:
    """The responses IFEval's loose variant tries: as given, without its first and/or last line, each
    also without `*` (markdown)."""
    lines = r.split("\n")
    cut = [r, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [cut[0], cut[0].replace("*", ""), *cut[1:], *(c.replace("*", "") for c in cut[1:])]


def ifeval_followed(response: str, instruction_ids, kwargs, loose: bool = False) -> list[bool] | None:
    """IFEval, strict (or `loose`: followed by any of `_loose_variants`): whether `response` follows each
    instruction; None when any instruction's type is not implemented here (the item is then not scored).

    Arguments as upstream, except that only unset (None) ones are dropped: upstream drops every falsy
    value, so a zero-valued keyword (`let_frequency: 0`) got a random value there; here it is used as given.
    """
    if any(i not in IFEVAL_CHECKS for i in instruction_ids):
        return None
    candidates = _loose_variants(response) if loose else [response]
    out = []
    for inst, kw in zip(instruction_ids, kwargs):
        kw = {k: v for k, v in (kw or {}).items() if v is not None}
        out.append(any(r.strip() and IFEVAL_CHECKS[inst](r, **kw) for r in candidates))
    return out


def _ifeval_statistics(item, gen, ctx):
    """(prompt strict, instructions followed strict, prompt loose, followed loose, instructions, 1)."""
    return _statistics(gen.text, json.dumps([item.meta["instruction_id_list"], item.meta["kwargs"]], default=str))


@lru_cache(maxsize=4096)
def _statistics(text: str, spec: str):  # (the five IFEval metrics read the same checks: run them once)
    ids, kw = json.loads(spec)
    strict = ifeval_followed(text, ids, kw)
    if strict is None:
        return None
    loose = ifeval_followed(text, ids, kw, loose=True)
    return float(all(strict)), sum(strict), float(all(loose)), sum(loose), len(ids), 1.0


def _ifeval_mean(t) -> float:
    """VoiceBench's IFEval score: the mean of prompt- and instruction-level accuracy, strict and loose."""
    if not t[5]:
        return float("nan")
    return (t[0] / t[5] + t[1] / t[4] + t[2] / t[5] + t[3] / t[4]) / 4


def _part(i: int, over: int):
    return lambda t: float(t[i] / t[over]) if t[over] else float("nan")


IFEVAL_METRICS = (  # the first is the headline (VoiceBench's number); each one reads the same statistics
    Metric("ifeval", "corpus", True, _ifeval_statistics, _ifeval_mean),
    Metric("ifeval_prompt_strict", "corpus", True, _ifeval_statistics, _part(0, 5)),
    Metric("ifeval_instruction_strict", "corpus", True, _ifeval_statistics, _part(1, 4)),
    Metric("ifeval_prompt_loose", "corpus", True, _ifeval_statistics, _part(2, 5)),
    Metric("ifeval_instruction_loose", "corpus", True, _ifeval_statistics, _part(3, 4)),
)
