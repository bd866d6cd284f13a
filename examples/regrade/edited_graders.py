"""Edited Countdown graders, for `rft regrade` (README: Small-data tools).

The built-in `countdown` grader gives 1 for an expression that makes the target exactly (each given
number at most once) and 0 otherwise. Two edits one might consider after a run, both checked on
what the model actually wrote before anyone trains again:

- `near_misses`: the television show's scoring: 10 points for the target, 7 within 5 of it, 5
  within 10 (here 1.0, 0.7, 0.5); partial credit separates completions that tie at 0.
- `all_numbers`: stricter: the answer must use every given number.
"""

from collections import Counter
from fractions import Fraction

from rftkit.graders.base import Grade
from rftkit.tasks.countdown import verify


def _puzzle(example):
    return [int(n) for n in example.fields["numbers"]], int(example.fields["target"])


def near_misses(example, completion):
    numbers, target = _puzzle(example)
    grade = verify(completion, numbers, target)
    details = grade.details
    if grade.score == 1 or "value" not in details or Counter(details["used"]) - Counter(numbers):
        return grade  # exact, unparsable, or a number it was not given
    distance = abs(Fraction(details["value"]) - target)
    for within, score in ((5, 0.7), (10, 0.5)):
        if distance <= within:
            return Grade(score, f"{details['answer']} = {details['value']}, {distance} from {target} "
                         f"(within {within}: {score})", details)
    return grade


def all_numbers(example, completion):
    numbers, target = _puzzle(example)
    grade = verify(completion, numbers, target)
    if grade.score < 1:
        return grade
    unused = sorted((Counter(numbers) - Counter(grade.details["used"])).elements())
    if unused:
        return Grade(0.0, f"{grade.details['answer']} makes the target but leaves {unused} unused", grade.details)
    return grade
