"""Final answers in math text, found in one pass: `\\boxed{}`, GSM8K's `####`, plain numbers.

Every extraction here is linear in the text: braces are matched for the whole text in one scan
(a completion with thousands of unclosed `\\boxed{` costs one pass, not one pass per box), and the
number pattern has no nested repetition. Normalisation of LaTeX answers follows the MATH paper's
`is_equiv` (Hendrycks et al. 2021, arXiv:2103.03874), made total: where the original asserts or
raises, the text is left as it is.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_NUMBER_CHARS = 100  # longer digit runs are not answers, and int() of them may refuse anyway
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"[{}]")
_FRAC_RE = re.compile(r"\\[dt]?frac\{(\d{1,50})\}\{(\d{1,50})\}")
NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+")


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}` whose brace closes, in order."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    for brace in _BRACE_RE.finditer(text):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closing[opened.pop()] = brace.start()
    found = []
    for box in _BOX_RE.finditer(text):
        close = closing.get(box.end() - 1)
        if close is not None:
            found.append(text[box.end():close])
    return found


def hash_answers(text: str) -> list[str]:
    """What follows each `####` up to the end of its line (GSM8K's answer marker)."""
    return [part.split("\n", 1)[0].strip() for part in text.split("####")[1:]]


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` ('1,234', '-3.5', '3/4', '\\frac{3}{4}', '$42.', '50%' -> 50), exactly."""
    match = NUMBER_RE.search(_FRAC_RE.sub(r"\1/\2", text) if "frac" in text else text)
    if match is None or len(match.group()) > MAX_NUMBER_CHARS:
        return None
    number = match.group().replace(",", "").replace(" ", "")
    try:
        value = Fraction(number)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def plain_number(text: str) -> Fraction | None:
    """`text` as a number when it is nothing else ('1,000', '-2.5', '3/4'), else None."""
    text = text.strip()
    return parse_number(text) if NUMBER_RE.fullmatch(text) else None


def last_number(text: str) -> str | None:
    last = None
    for last in NUMBER_RE.finditer(text):  # noqa: B007  (the loop keeps the last match)
        pass
    return None if last is None else last.group()


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


# ---------------------------------------------------------------- MATH's answer normalisation


def _fix_fracs(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`."""
    head, *rest = text.split("\\frac")
    out = [head]
    for part in rest:
        out.append("\\frac")
        if part.startswith("{"):
            out.append(part)
        elif len(part) < 2:
            return text
        elif part[1] != "{":
            out.append("{" + part[0] + "}{" + part[1] + "}" + part[2:])
        else:
            out.append("{" + part[0] + "}" + part[1:])
    return "".join(out)


def _fix_a_slash_b(text: str) -> str:
    parts = text.split("/")
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and len(text) < MAX_NUMBER_CHARS:
        a, b = int(parts[0]), int(parts[1])
        if text == f"{a}/{b}":
            return "\\frac{" + str(a) + "}{" + str(b) + "}"
    return text


def _fix_sqrt(text: str) -> str:
    """`\\sqrt2` -> `\\sqrt{2}`."""
    head, *rest = text.split("\\sqrt")
    return head + "".join("\\sqrt" + (part if part.startswith("{") or not part else "{" + part[0] + "}" + part[1:])
                          for part in rest)


def normalize_latex(text: str) -> str:
    """MATH's `_strip_string`: the same answer written two ways becomes one string."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        text = text.replace(old, new)
    units = text.split("\\text{ ")
    if len(units) == 2:  # "\\text{ cm}" marks units in MATH's answers
        text = units[0]
    text = text.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "x = 5" -> "5"
        text = sides[1]
    text = _fix_fracs(_fix_sqrt(text).replace(" ", ""))
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)
