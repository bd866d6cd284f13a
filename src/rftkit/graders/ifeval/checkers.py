"""The 25 IFEval instruction types (Zhou et al. 2023, arXiv:2311.07911), one checker each.

Each verdict follows the reference checker (google-research `instruction_following_eval`,
as the `if-verifiable` package ships it); tests/graders/test_ifeval_reference.py compares the two
on an edge-case corpus, type by type. Deliberate differences, each because the reference crashes,
guesses or cannot be reproduced:
- keywords, forbidden words, postscript markers and section splitters are literal text, not
  regexes (the reference passes them to `re`: `e.g.` matches `eXgX`, and on Python 3.11+ `C++`
  is a possessive `C+` that finds any `C`; before 3.11 it raises); a forbidden word is bounded
  like `\\bword\\b` only at edges that are word characters;
- a missing or invalid argument is an error naming it (the reference draws a random one);
- JSON nested past Python's recursion limit is "not JSON" (the reference raises);
- language detection is seeded (the reference's langdetect is not; with seed 0 both agree);
- a `<think>...</think>` block is graded as text (if-verifiable's wrapper drops it; Google's does not).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from rftkit.graders.ifeval import text as t

RELATIONS = ("less than", "at least")
ANSWER_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


class InstructionError(ValueError):
    """An instruction id or its arguments are not usable; the message names them."""


Check = Callable[[str], tuple[bool, str]]


def _compare(count: int, relation: str, threshold: int, unit: str) -> tuple[bool, str]:
    ok = count < threshold if relation == "less than" else count >= threshold
    return ok, f"{count} {unit} (want {relation} {threshold})"


def literal_pattern(word: str) -> str:
    """`word` as a regex matching itself, bounded like `\\bword\\b` where its edges are word characters."""
    head = r"(?<!\w)" if re.match(r"\w", word) else ""
    tail = r"(?!\w)" if re.search(r"\w$", word) else ""
    return head + re.escape(word) + tail


# ---------------------------------------------------------------- checkers (text, args) -> (ok, why)


def keywords_existence(text: str, keywords: list[str]) -> tuple[bool, str]:
    missing = [k for k in sorted(keywords) if not re.search(re.escape(k), text, re.IGNORECASE)]
    return not missing, f"missing {missing}" if missing else "all keywords present"


def keywords_frequency(text: str, keyword: str, frequency: int, relation: str) -> tuple[bool, str]:
    count = len(re.findall(re.escape(keyword.strip()), text, re.IGNORECASE))
    return _compare(count, relation, frequency, f"x {keyword.strip()!r}")


def forbidden_words(text: str, forbidden_words: list[str]) -> tuple[bool, str]:
    found = [w for w in sorted(set(forbidden_words)) if re.search(literal_pattern(w), text, re.IGNORECASE)]
    return not found, f"uses forbidden {found}" if found else "no forbidden words"


def letter_frequency(text: str, letter: str, let_frequency: int, let_relation: str) -> tuple[bool, str]:
    letter = letter.strip().lower()
    return _compare(text.lower().count(letter), let_relation, let_frequency, f"x {letter!r}")


def response_language(text: str, language: str) -> tuple[bool, str]:
    found = t.detect_language(text)
    if found is None:  # the reference counts "no language detectable" (digits only) as followed
        return True, "no language detectable (counted as followed, as the reference does)"
    return found == language, f"language {found} (want {language})"


def number_sentences(text: str, num_sentences: int, relation: str) -> tuple[bool, str]:
    return _compare(t.count_sentences(text), relation, num_sentences, "sentences")


def number_paragraphs(text: str, num_paragraphs: int) -> tuple[bool, str]:
    paragraphs = re.split(r"\s?\*\*\*\s?", text)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False, f"empty paragraph {index + 1} between *** dividers"
    return count == num_paragraphs, f"{count} paragraphs split by *** (want {num_paragraphs})"


def number_words(text: str, num_words: int, relation: str) -> tuple[bool, str]:
    return _compare(t.count_words(text), relation, num_words, "words")


def nth_paragraph_first_word(text: str, num_paragraphs: int, nth_paragraph: int,
                             first_word: str) -> tuple[bool, str]:
    paragraphs = text.split("\n\n")
    count = sum(1 for p in paragraphs if p.strip())
    # As the reference: the count skips empty paragraphs, the index does not.
    if nth_paragraph > count or not paragraphs[nth_paragraph - 1].strip():
        return False, f"no paragraph {nth_paragraph} ({count} paragraphs split by blank lines)"
    word = paragraphs[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    first = "".join(c.lower() for c in re.split(r"[.,?!'\"]", word, maxsplit=1)[0])  # per character, as the reference
    ok = count == num_paragraphs and first == first_word.lower()
    return ok, f"{count} paragraphs (want {num_paragraphs}); paragraph {nth_paragraph} starts {first!r} " \
               f"(want {first_word.lower()!r})"


def number_placeholders(text: str, num_placeholders: int) -> tuple[bool, str]:
    count = t.count_placeholders(text)
    return count >= num_placeholders, f"{count} [placeholders] (want at least {num_placeholders})"


def postscript(text: str, postscript_marker: str) -> tuple[bool, str]:
    marker = postscript_marker.strip()
    pattern = {"P.P.S": r"p\.\s?p\.\s?s", "P.S.": r"p\.\s?s\."}.get(marker, re.escape(marker.lower()))
    ok = re.search(pattern, text.lower()) is not None
    return ok, f"{'has' if ok else 'no'} postscript starting {marker!r}"


def number_bullet_lists(text: str, num_bullets: int) -> tuple[bool, str]:
    count = t.count_line_markers(text, "*", forbid_next="*") + t.count_line_markers(text, "-", forbid_next=None)
    return count == num_bullets, f"{count} bullets (want exactly {num_bullets})"


def constrained_response(text: str) -> tuple[bool, str]:
    ok = any(option in text.strip() for option in ANSWER_OPTIONS)
    return ok, "answers with one of the options" if ok else f"none of {list(ANSWER_OPTIONS)}"


def number_highlighted_sections(text: str, num_highlights: int) -> tuple[bool, str]:
    single = sum(1 for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip())
    double = sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip())
    count = single + double
    return count >= num_highlights, f"{count} *highlighted* sections (want at least {num_highlights})"


def multiple_sections(text: str, section_spliter: str, num_sections: int) -> tuple[bool, str]:
    spliter = section_spliter.strip()
    count = len(re.split(r"\s?" + re.escape(spliter) + r"\s?\d+\s?", text)) - 1
    return count >= num_sections, f"{count} sections marked '{spliter} N' (want at least {num_sections})"


def json_format(text: str) -> tuple[bool, str]:
    body = text.strip().removeprefix("```json").removeprefix("```Json").removeprefix("```JSON").removeprefix("```")
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except ValueError:
        return False, "not valid JSON"
    except RecursionError:
        return False, "not valid JSON (nested too deeply to parse)"
    return True, "valid JSON"


def title(text: str) -> tuple[bool, str]:
    ok = any(found.lstrip("<").rstrip(">").strip() for found in t.titles(text))
    return ok, "has a <<title>>" if ok else "no <<title>>"


def two_responses(text: str) -> tuple[bool, str]:
    parts = text.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part)
        elif index not in (0, len(parts) - 1):
            return False, "an empty response between ****** dividers"
    ok = len(valid) == 2 and valid[0].strip() != valid[1].strip()
    return ok, f"{len(valid)} responses split by ******" + (" (identical)" if len(valid) == 2 and not ok else "")


def repeat_prompt(text: str, prompt_to_repeat: str) -> tuple[bool, str]:
    ok = text.strip().lower().startswith(prompt_to_repeat.strip().lower())
    return ok, "starts by repeating the request" if ok else "does not start with the request word for word"


def end_checker(text: str, end_phrase: str) -> tuple[bool, str]:
    ok = text.strip().strip('"').lower().endswith(end_phrase.strip().lower())
    return ok, f"{'ends' if ok else 'does not end'} with {end_phrase.strip()!r}"


def capital_word_frequency(text: str, capital_frequency: int, capital_relation: str) -> tuple[bool, str]:
    count = sum(1 for token in t.word_tokens(text) if token.isupper())
    return _compare(count, capital_relation, capital_frequency, "all-capital words")


def _english_case(text: str, upper: bool) -> tuple[bool, str]:
    want = "capital" if upper else "lowercase"
    if not (text.isupper() if upper else text.islower()):
        return False, f"not all {want}"
    found = t.detect_language(text)
    if found is None:
        return True, f"all {want}; no language detectable (counted as followed, as the reference does)"
    return found == "en", f"all {want}, language {found} (want en)"


def english_capital(text: str) -> tuple[bool, str]:
    return _english_case(text, upper=True)


def english_lowercase(text: str) -> tuple[bool, str]:
    return _english_case(text, upper=False)


def no_comma(text: str) -> tuple[bool, str]:
    count = text.count(",")
    return count == 0, "no commas" if count == 0 else f"{count} commas"


def quotation(text: str) -> tuple[bool, str]:
    body = text.strip()
    ok = len(body) > 1 and body[0] == '"' and body[-1] == '"'
    return ok, "wrapped in double quotes" if ok else "not wrapped in double quotes"


# ---------------------------------------------------------------- registry and argument checks


@dataclass(frozen=True)
class Instruction:
    check: Callable[..., tuple[bool, str]]
    args: dict[str, str]  # name -> kind: int, text, words, relation, letter, language


INSTRUCTIONS: dict[str, Instruction] = {
    "keywords:existence": Instruction(keywords_existence, {"keywords": "words"}),
    "keywords:frequency": Instruction(keywords_frequency, {"keyword": "text", "frequency": "int",
                                                           "relation": "relation"}),
    "keywords:forbidden_words": Instruction(forbidden_words, {"forbidden_words": "words"}),
    "keywords:letter_frequency": Instruction(letter_frequency, {"letter": "letter", "let_frequency": "int",
                                                                "let_relation": "relation"}),
    "language:response_language": Instruction(response_language, {"language": "text"}),
    "length_constraints:number_sentences": Instruction(number_sentences, {"num_sentences": "int",
                                                                          "relation": "relation"}),
    "length_constraints:number_paragraphs": Instruction(number_paragraphs, {"num_paragraphs": "int"}),
    "length_constraints:number_words": Instruction(number_words, {"num_words": "int", "relation": "relation"}),
    "length_constraints:nth_paragraph_first_word": Instruction(
        nth_paragraph_first_word, {"num_paragraphs": "int", "nth_paragraph": "positive", "first_word": "text"}),
    "detectable_content:number_placeholders": Instruction(number_placeholders, {"num_placeholders": "int"}),
    "detectable_content:postscript": Instruction(postscript, {"postscript_marker": "text"}),
    "detectable_format:number_bullet_lists": Instruction(number_bullet_lists, {"num_bullets": "int"}),
    "detectable_format:constrained_response": Instruction(constrained_response, {}),
    "detectable_format:number_highlighted_sections": Instruction(number_highlighted_sections,
                                                                 {"num_highlights": "int"}),
    "detectable_format:multiple_sections": Instruction(multiple_sections, {"section_spliter": "text",
                                                                           "num_sections": "int"}),
    "detectable_format:json_format": Instruction(json_format, {}),
    "detectable_format:title": Instruction(title, {}),
    "combination:two_responses": Instruction(two_responses, {}),
    "combination:repeat_prompt": Instruction(repeat_prompt, {"prompt_to_repeat": "text"}),
    "startend:end_checker": Instruction(end_checker, {"end_phrase": "text"}),
    "change_case:capital_word_frequency": Instruction(capital_word_frequency, {"capital_frequency": "int",
                                                                               "capital_relation": "relation"}),
    "change_case:english_capital": Instruction(english_capital, {}),
    "change_case:english_lowercase": Instruction(english_lowercase, {}),
    "punctuation:no_comma": Instruction(no_comma, {}),
    "startend:quotation": Instruction(quotation, {}),
}


def _argument(instruction_id: str, name: str, kind: str, value: Any) -> Any:
    where = f"{instruction_id}: {name}={value!r}"
    if kind in ("int", "positive"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if kind == "positive" else 0):
            raise InstructionError(f"{where}: need an integer >= {1 if kind == 'positive' else 0}")
        return value
    if kind == "words":
        if not isinstance(value, list) or not value or not all(isinstance(w, str) and w.strip() for w in value):
            raise InstructionError(f"{where}: need a non-empty list of non-empty strings")
        return value
    if not isinstance(value, str) or not value.strip():
        raise InstructionError(f"{where}: need a non-empty string")
    if kind == "relation" and value not in RELATIONS:
        raise InstructionError(f"{where}: need one of {list(RELATIONS)}")
    if kind == "letter" and not (len(value.strip()) == 1 and "a" <= value.strip().lower() <= "z"):
        raise InstructionError(f"{where}: need one letter a-z")
    return value


def build_check(instruction_id: str, kwargs: dict[str, Any] | None) -> Check:
    """The checker for one instruction with its arguments; `None` values are unused arguments (as in
    the Hugging Face copy of IFEval, where every row carries every argument name)."""
    if instruction_id not in INSTRUCTIONS:
        raise InstructionError(f"unknown IFEval instruction {instruction_id!r}; known: {', '.join(INSTRUCTIONS)}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InstructionError(f"{instruction_id}: arguments must be an object, got {type(kwargs).__name__}")
    instruction = INSTRUCTIONS[instruction_id]
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    unknown = sorted(set(given) - set(instruction.args))
    if unknown:
        raise InstructionError(f"{instruction_id}: unknown argument(s) {unknown}; "
                               f"takes {sorted(instruction.args) or 'none'}")
    missing = [name for name in instruction.args if name not in given]
    if missing:
        raise InstructionError(f"{instruction_id}: missing argument(s) {missing}")
    args = {name: _argument(instruction_id, name, kind, given[name]) for name, kind in instruction.args.items()}
    if args.get("nth_paragraph", 0) > args.get("num_paragraphs", 1):
        raise InstructionError(f"{instruction_id}: nth_paragraph={args['nth_paragraph']} is past "
                               f"num_paragraphs={args['num_paragraphs']}")
    return lambda text: instruction.check(text, **args)
