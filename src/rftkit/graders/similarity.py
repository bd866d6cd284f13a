"""`text_similarity`: partial credit for near-misses (OpenAI's text_similarity grader).

Metrics: fuzzy_match (rapidfuzz's normalised Indel similarity, `fuzz.ratio / 100`), bleu
(sacrebleu's sentence BLEU with its default exponential smoothing, / 100), gleu (sentence
GLEU as in Wu et al. 2016: min of n-gram precision and recall, n = 1..4), rouge_1..rouge_5
(n-gram F1) and rouge_l (LCS F1). ROUGE and GLEU tokens are lower-cased Unicode words
(`\\w+`), so non-Latin text scores sensibly (rouge-score's tokenizer drops every non-ASCII
character, which would score any two Chinese sentences 0); the LCS is rapidfuzz's C++ LCSseq,
so a 100k-token output costs milliseconds, not a Python O(n*m) table.

The score is the metric itself (raw partial credit); with `binary: true` it is 1 when the metric
reaches `pass_threshold` and 0 otherwise. OpenAI's cosine (needs an embedding model) and meteor
(needs WordNet data) are not offered; config validation says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from pydantic import Field, field_validator

from rftkit.data import Example
from rftkit.graders.base import Grade, GraderParams, clamp01, register
from rftkit.graders.templates import OUTPUT_TEXT, Template, check_template, compile_template, sample_errors_score_zero

METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
_UNSUPPORTED = {"cosine": "needs an embedding model", "meteor": "needs NLTK's WordNet data"}
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if overlap == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(hypothesis: str, reference: str, n: int) -> float:
    hyp, ref = _ngrams(tokens(hypothesis), n), _ngrams(tokens(reference), n)
    return _f1(sum((hyp & ref).values()), sum(hyp.values()), sum(ref.values()))


def rouge_l(hypothesis: str, reference: str) -> float:
    from rapidfuzz.distance import LCSseq

    hyp, ref = tokens(hypothesis), tokens(reference)
    return _f1(LCSseq.similarity(hyp, ref), len(hyp), len(ref))


def gleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp_words, ref_words = tokens(hypothesis), tokens(reference)
    overlap = hyp_total = ref_total = 0
    for n in range(1, max_n + 1):
        hyp, ref = _ngrams(hyp_words, n), _ngrams(ref_words, n)
        overlap += sum((hyp & ref).values())
        hyp_total += sum(hyp.values())
        ref_total += sum(ref.values())
    if hyp_total == 0 or ref_total == 0:
        return 0.0
    return min(overlap / hyp_total, overlap / ref_total)


def bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu  # lazy: only configs that use BLEU pay for the import

    if not hypothesis.strip() or not reference.strip():
        return 0.0
    return sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100.0


def fuzzy_match(hypothesis: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(hypothesis, reference) / 100.0


def similarity(metric: str, hypothesis: str, reference: str) -> float:
    if metric == "fuzzy_match":
        return fuzzy_match(hypothesis, reference)
    if metric == "bleu":
        return bleu(hypothesis, reference)
    if metric == "gleu":
        return gleu(hypothesis, reference)
    if metric == "rouge_l":
        return rouge_l(hypothesis, reference)
    return rouge_n(hypothesis, reference, int(metric[-1]))


class TextSimilarityParams(GraderParams):
    input: str = Field(OUTPUT_TEXT, description="Template of the text to grade.")
    reference: str = Field(description="Template of the reference text.")
    evaluation_metric: str = Field("fuzzy_match", description=f"One of {', '.join(METRICS)}.")
    pass_threshold: float | None = Field(None, ge=0, le=1, description="Metric value that counts as a pass "
                                         "(reported in details; the score with binary: true).")
    binary: bool = Field(False, validate_default=True, description="Score 1/0 by pass_threshold instead of the "
                         "raw metric.")
    _check = field_validator("input", "reference")(check_template)

    @field_validator("evaluation_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in _UNSUPPORTED:
            raise ValueError(f"{value!r} is not supported ({_UNSUPPORTED[value]}); use one of {', '.join(METRICS)}")
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; use one of {', '.join(METRICS)}")
        return value

    @field_validator("binary")
    @classmethod
    def _binary_needs_threshold(cls, value: bool, info) -> bool:
        if value and info.data.get("pass_threshold") is None:
            raise ValueError("binary: true needs a pass_threshold")
        return value


@dataclass(frozen=True)
class TextSimilarity:
    name: str
    input: Template
    reference: Template
    metric: str
    pass_threshold: float | None
    binary: bool

    @sample_errors_score_zero
    def grade(self, example: Example, completion: str) -> Grade:
        text = self.input.render(example, completion)
        reference = self.reference.render(example, completion)
        value = clamp01(similarity(self.metric, text, reference))  # sacrebleu can return 100.00000000000004
        details = {"metric": self.metric, "value": value}
        if self.pass_threshold is None:
            return Grade(value, f"{self.metric} = {value:.3f}", details)
        passed = value >= self.pass_threshold
        details["passed"] = passed
        verdict = "pass" if passed else "fail"
        score = (1.0 if passed else 0.0) if self.binary else value
        return Grade(score, f"{self.metric} = {value:.3f} ({verdict} at {self.pass_threshold:g})", details)


@register("text_similarity", TextSimilarityParams, "Partial credit by fuzzy_match, bleu, gleu, rouge_1..5 or "
          "rouge_l against a reference; optionally 1/0 by pass_threshold")
def _build(name: str, p: TextSimilarityParams) -> TextSimilarity:
    return TextSimilarity(name, compile_template(p.input), compile_template(p.reference), p.evaluation_metric,
                          p.pass_threshold, p.binary)
