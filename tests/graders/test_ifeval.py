"""The `ifeval` grader: IFEval rows as they are, strict and loose, both levels, bad rows, hostile text."""

from __future__ import annotations

import json
import time

import pytest

from rftkit.data import example_from_row
from rftkit.graders import GRADER_TYPES
from rftkit.graders.ifeval import INSTRUCTIONS, InstructionError, build_check, follows, loose_variants
from rftkit.graders.ifeval import text as ifeval_text

from .conftest import make

ALL_ARGUMENT_NAMES = sorted({name for spec in INSTRUCTIONS.values() for name in spec.args})

# A row as google-research's input_data.jsonl writes it: only the arguments each instruction takes.
JSONL_ROW = {"key": 1000, "prompt": "Write a short note. Use no commas and end with 'Is there anything else?'",
             "instruction_id_list": ["punctuation:no_comma", "startend:end_checker",
                                     "length_constraints:number_words"],
             "kwargs": [{}, {"end_phrase": "Is there anything else?"}, {"num_words": 5, "relation": "at least"}]}


def hf_style(row: dict) -> dict:
    """The same row as hf:google/IFEval gives it: every argument name in every kwargs object, None if unused."""
    padded = [{name: args.get(name) for name in ALL_ARGUMENT_NAMES} for args in row["kwargs"]]
    return {**row, "kwargs": padded}


@pytest.mark.parametrize("row", [JSONL_ROW, hf_style(JSONL_ROW)], ids=["jsonl", "hf"])
def test_rows_as_they_are(row):
    example = example_from_row(json.loads(json.dumps(row)), "ifeval.jsonl:1")
    grader = make("ifeval")
    good = grader.grade(example, "Here is my short note for you today. Is there anything else?")
    assert good.score == 1.0 and good.reason.startswith("strict: 3/3")
    bad = grader.grade(example, "Hi, there. Is there anything else?")  # a comma; 6 words; the right ending
    assert [r["ok"] for r in bad.details["results"]] == [False, True, True]

def test_levels_and_reasons():
    example = example_from_row(JSONL_ROW, "row")
    completion = "Hi, there. Is there anything else?"  # a comma; 6 words; the right ending
    instruction = make("ifeval").grade(example, completion)
    prompt = make("ifeval", level="prompt").grade(example, completion)
    assert instruction.score == pytest.approx(2 / 3) and prompt.score == 0.0
    assert "punctuation:no_comma: 1 commas" in instruction.reason
    assert [r["id"] for r in instruction.details["results"]] == JSONL_ROW["instruction_id_list"]


def test_loose_forgives_a_preamble_line_and_markdown_stars():
    example = example_from_row({"prompt": "p", "instruction_id_list": ["startend:quotation", "keywords:existence"],
                                "kwargs": [{}, {"keywords": ["blue whale"]}]}, "row")
    completion = 'Sure, here it is:\n"The **blue** whale is big."'
    assert make("ifeval", mode="strict").grade(example, completion).score == 0.0
    loose = make("ifeval", mode="loose").grade(example, completion)
    assert loose.score == 1.0
    assert [r["detail"] for r in loose.details["results"]] == [
        "wrapped in double quotes (loose: without the first line)",
        "all keywords present (loose: without *)"]


def test_loose_variants_are_the_papers_eight():
    variants = loose_variants("first\n*mid*\nlast")
    assert len(variants) == 8 and variants[0] == "first\n*mid*\nlast"
    assert set(variants) == {"first\n*mid*\nlast", "first\nmid\nlast", "*mid*\nlast", "first\n*mid*", "*mid*",
                             "mid\nlast", "first\nmid", "mid"}


def test_empty_output_follows_nothing_even_vacuous_instructions():
    example = example_from_row({"prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, "r")
    for mode in ("strict", "loose"):
        grade = make("ifeval", mode=mode).grade(example, "  \n ")
        assert grade.score == 0.0 and "empty response" in grade.reason


@pytest.mark.parametrize("fields, message", [
    ({}, "must be a non-empty list"),
    ({"instruction_id_list": "punctuation:no_comma"}, "must be a non-empty list"),
    ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}, "one object per instruction"),
    ({"instruction_id_list": ["keywords:nope"], "kwargs": [{}]}, "unknown IFEval instruction 'keywords:nope'"),
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5}]},
     r"missing argument\(s\) \['relation'\]"),
    ({"instruction_id_list": ["length_constraints:number_words"],
      "kwargs": [{"num_words": 5, "relation": "at most"}]}, "need one of"),
    ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"num_words": 5}]}, "unknown argument"),
    ({"instruction_id_list": ["keywords:letter_frequency"],
      "kwargs": [{"letter": "ab", "let_frequency": 2, "let_relation": "at least"}]}, "one letter"),
    ({"instruction_id_list": ["length_constraints:nth_paragraph_first_word"],
      "kwargs": [{"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "x"}]}, "past num_paragraphs"),
    ({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": []}]}, "non-empty list"),
])
def test_a_bad_row_is_an_error_naming_it(fields, message):
    example = example_from_row({"id": "row-7", "prompt": "p", **fields}, "r")
    with pytest.raises(InstructionError, match=message) as info:
        make("ifeval").grade(example, "some text")
    assert "row-7" in str(info.value)


def test_integral_floats_from_a_dataframe_are_integers():
    check = build_check("length_constraints:number_words", {"num_words": 2.0, "relation": "at least"})
    assert check("two words")[0]
    with pytest.raises(InstructionError, match="integer"):
        build_check("length_constraints:number_words", {"num_words": 2.5, "relation": "at least"})


def test_params_are_validated():
    params = GRADER_TYPES["ifeval"].params
    with pytest.raises(ValueError, match="strict"):
        params.model_validate({"mode": "lenient"})
    with pytest.raises(ValueError, match="Extra inputs"):
        params.model_validate({"levle": "prompt"})


def test_a_missing_extra_is_a_clear_error(monkeypatch):
    import sys

    ifeval_text._sentence_tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, "punkt.data", None)
    try:
        with pytest.raises(ifeval_text.MissingDependency, match=r"rftkit\[ifeval\]"):
            ifeval_text.count_sentences("One. Two.")
    finally:
        ifeval_text._sentence_tokenizer.cache_clear()


ARGS = {
    "keywords:existence": {"keywords": ["hello"]},
    "keywords:frequency": {"keyword": "hello", "frequency": 2, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["hello"]},
    "keywords:letter_frequency": {"letter": "a", "let_frequency": 2, "let_relation": "at least"},
    "language:response_language": {"language": "en"},
    "length_constraints:number_sentences": {"num_sentences": 2, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 2},
    "length_constraints:number_words": {"num_words": 2, "relation": "at least"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "a"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 2},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 2},
    "combination:repeat_prompt": {"prompt_to_repeat": "hello"},
    "startend:end_checker": {"end_phrase": "bye"},
    "change_case:capital_word_frequency": {"capital_frequency": 2, "capital_relation": "at least"},
}
N = 20_000
HOSTILE = {"newlines": "\n" * N, "brackets": "[" * N, "angles": "<" * N, "stars": "*" * N, "star lines": "*\n" * N,
           "blank then star": " \n" * N + "*", "spaces": " " * N + "x", "dots": ". " * N, "nested": "[" * N + "]" * N,
           "quotes": "'\"" * N, "surrogates": "a\ud800" * N, "dashes": "-\n" * N}


@pytest.mark.parametrize("instruction_id", list(INSTRUCTIONS))
def test_hostile_text_gets_a_verdict_in_linear_time(instruction_id):
    """The reference's regexes are quadratic on several of these (a line of `[`, a run of blank lines)."""
    check = build_check(instruction_id, ARGS.get(instruction_id, {}))
    start = time.process_time()  # this process's CPU time: linear work, whatever else loads the machine
    for text in HOSTILE.values():
        follows(check, text, "loose")
    assert time.process_time() - start < 10.0


@pytest.mark.parametrize("text", ["[" * 40_000 + "\n", "\n" * 40_000 + "x", "<<" * 20_000 + ">"])
def test_scans_that_are_quadratic_as_regexes(text):
    start = time.perf_counter()
    ifeval_text.count_placeholders(text), ifeval_text.count_line_markers(text, "*", "*"), ifeval_text.titles(text)
    assert time.perf_counter() - start < 0.5
