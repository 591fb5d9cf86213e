"""VoiceBench's scoring rules (tasks/voicebench.py): the multiple-choice parser on realistic answers, IFEval
strict and loose with the types added in issue 39. Each IFEval case below was checked against Google's
instruction_following_eval (the copy in VoiceBench, src/evaluator/instruction_following_eval) on the
same response; each MCQ reading is the letter the answer plainly states (VoiceBench's parser differs on
22 of these 61: it misses 17 plain statements and misreads 5, e.g. `The answer is actually C` → A)."""
import pytest

from bench.types import Generation, Item, Turn
from tasks.voicebench import IFEVAL_METRICS, MCQ_METRICS, ifeval_followed, parse_choice

# (answer, the letter it states; None: no letter, more than one, or not an option)
MCQ_READINGS = [
    # one letter
    ("B", "B"), ("(c)", "C"), ("**D.**", "D"), ("a", "A"), ("C.", "C"), ("[B]", "B"),
    # opening with the letter
    ("A. Paris is the capital", "A"), ("C) because it is larger", "C"), ("b) Paris", "B"),
    ("B, because plants need light.", "B"), ("B\n\nExplanation: plants need light.", "B"),
    ("**D)** The moon", "D"), ("(A) Water boils at 100 degrees.", "A"), ("D - none of the above", "D"),
    ("c. the sun", "C"),
    # after an answer phrase, any case
    ("The answer is B.", "B"), ("the answer is b", "B"), ("Answer: a", "A"), ("Answer: (C)", "C"),
    ("**Answer:** B", "B"), ("**Answer: C**", "C"), ("Answer: **D**", "D"), ("The correct answer is **A**", "A"),
    ("The correct answer is: (D) Paris", "D"), ("The answer is actually C.", "C"), ("The answer is probably b.", "B"),
    ("The answer would be D.", "D"), ("The best answer is option A.", "A"), ("The right choice is c", "C"),
    ("My final answer: B", "B"), ("Option D is correct.", "D"), ("I would choose option D here.", "D"),
    ("The answer to the question is B.", "B"), ("The answer is a.", "A"), ("answer - b", "B"),
    # verbs of choosing
    ("I would choose A", "A"), ("I'd say D", "D"), ("I'd go with D", "D"), ("I'll pick (b).", "B"),
    ("I would select C because it is the largest.", "C"), ("I'm going with B.", "B"), ("I choose option a.", "A"),
    # other plain statements
    ("B is correct.", "B"), ("I think so. C is the right one.", "C"), ("I think it's B.", "B"),
    ("It is D.", "D"), ("The result is \\boxed{C}", "C"), ("Plants need light, so the answer is B. B says light.", "B"),
    # no letter, more than one, or not an option: never a guess
    ("The answer is a good question", None), ("It could be A or B", None), ("The answer is B, not option C", None),
    ("Paris", None), ("", None), ("As I said, the answer is E", None), ("A, B and C are all wrong.", None),
    ("Vitamin C is the best source.", None), ("It's A great question to ask.", None),
    ("I'm not sure, maybe A, maybe D.", None), ("Option A is wrong; the answer is C.", None),
    ("I would say a lot depends on the soil.", None), ("The sun is a star.", None),
]


@pytest.mark.parametrize("text, letter", MCQ_READINGS)
def test_parse_choice_reads_every_plain_statement_and_never_guesses(text, letter):
    assert parse_choice(text) == letter


def test_mcq_metrics_report_unparsed_and_voicebench_expected_accuracy():
    from bench.scoring import score_metric

    answers = {"a": "The answer is b", "b": "I'd go with D", "c": "Paris", "d": "It could be A or B"}
    items = [Item(id=k, turn=Turn("user", text="q"), references=(ref,)) for k, ref in zip(answers, "BACD")]
    outs = {k: Generation(v) for k, v in answers.items()}
    acc, unparsed, voicebench = (score_metric(m, items, outs, {})["value"] for m in MCQ_METRICS)
    assert (acc, unparsed) == (0.25, 0.5)
    assert voicebench == acc + unparsed / 4  # VoiceBench's random letter, in expectation: no draw


# (response, instruction, kwargs, followed strict, followed loose): upstream's verdicts on each
IFEVAL_CASES = [
    ("First answer.\n******\nSecond answer.", "combination:two_responses", {}, True, True),
    ("Same.\n******\nSame.", "combination:two_responses", {}, False, False),
    ("One.\n******\n\n******\nTwo.", "combination:two_responses", {}, False, False),
    ("Here you go:\nFirst.\n******\nSecond.", "combination:two_responses", {}, True, True),
    ("Only one answer.", "combination:two_responses", {}, False, False),
    ("Intro\n\nWhales are big.\n\nThe end.", "length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "whales"}, True, True),
    ("Intro\n\n\"Whales,\" she said.\n\nEnd", "length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "Whales"}, True, True),
    ("Intro\n\n**Whales** are big.\n\nEnd", "length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "whales"}, False, True),
    ("Intro\n\nDolphins are big.", "length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "whales"}, False, False),
    ("Intro\n\nWhales are big.", "length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "whales"}, False, False),
    ("Le chat est sur la table et il dort tranquillement au soleil.", "language:response_language",
     {"language": "fr"}, True, True),
    ("The cat is sleeping on the table in the warm afternoon sun.", "language:response_language",
     {"language": "fr"}, False, False),
    ("Der Hund spielt im Garten mit seinem roten Ball.", "language:response_language", {"language": "de"}, True, True),
    ("THE WEATHER IS NICE TODAY AND WE ARE GOING TO THE PARK.", "change_case:english_capital", {}, True, True),
    ("The weather is nice today and we are going to the park.", "change_case:english_capital", {}, False, False),
    ("the weather is nice today and we are going to the park.", "change_case:english_lowercase", {}, True, True),
    ("The weather is nice today and we are going to the park.", "change_case:english_lowercase", {}, False, False),
    ("Sure!\nthe weather is nice today and we are going to the park.", "change_case:english_lowercase", {}, False, True),
    ("Apple", "keywords:letter_frequency", {"letter": "A", "let_frequency": 2, "let_relation": "less than"}, True, True),
    ("Title\n\"quoted answer\"", "startend:quotation", {}, False, True),
    ("**Dear** friend, hello", "startend:end_checker", {"end_phrase": "hello"}, True, True),
    ("Here is it:\n{\"a\": 1}", "detectable_format:json_format", {}, False, True),
    ("one, two", "punctuation:no_comma", {}, False, False),
]


@pytest.mark.parametrize("response, instruction, kwargs, strict, loose", IFEVAL_CASES)
def test_ifeval_strict_and_loose_as_upstream(response, instruction, kwargs, strict, loose):
    assert ifeval_followed(response, [instruction], [kwargs]) == [strict]
    assert ifeval_followed(response, [instruction], [kwargs], loose=True) == [loose]


def test_ifeval_keyword_values_as_given():
    """The letter is stripped (upstream draws a random letter for `"a "`); a zero value is used, not
    dropped (upstream drops every falsy argument and draws a random one in its place)."""
    freq = {"letter": "a ", "let_frequency": 3, "let_relation": "at least"}
    assert ifeval_followed("banana", ["keywords:letter_frequency"], [freq]) == [True]
    zero = {"letter": "z", "let_frequency": 0, "let_relation": "at least"}
    assert ifeval_followed("banana", ["keywords:letter_frequency"], [zero]) == [True]
    assert ifeval_followed("banana", ["keywords:letter_frequency"], [{**zero, "let_relation": "less than"}]) == [False]
    assert ifeval_followed("hi", ["length_constraints:number_sentences"], [{"num_sentences": 1}]) is None


def test_ifeval_headline_is_voicebenchs_mean_of_four():
    from bench.scoring import score_metric

    spec = {"instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}, {}]}
    items = [Item(id=k, turn=Turn("user", text="q"), meta=spec) for k in "ab"]
    outs = {"a": Generation('"no commas here"'), "b": Generation('Sure, here:\n"one, two"')}
    values = {m.name: score_metric(m, items, outs, {})["value"] for m in IFEVAL_METRICS}
    # a follows both; b: strict follows neither, loose (first line dropped) follows the quotation only
    assert values["ifeval_prompt_strict"] == 0.5 and values["ifeval_instruction_strict"] == 0.5
    assert values["ifeval_prompt_loose"] == 0.5 and values["ifeval_instruction_loose"] == 0.75
    assert values["ifeval"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.75) / 4)
