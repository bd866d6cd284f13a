"""An edited Countdown grader, for `rft regrade`: an answer is correct only if it uses every given number.

The built-in `countdown` grader accepts any subset of the numbers (each at most once). Suppose the
task was meant to be "use all of them": regrading the run's stored completions with this grader shows
how many rewarded answers it would have failed, before anyone trains again.
"""

from collections import Counter

from rftkit.graders.base import Grade
from rftkit.tasks.countdown import verify


def all_numbers(example, completion):
    numbers = [int(n) for n in example.fields["numbers"]]
    grade = verify(completion, numbers, int(example.fields["target"]))
    if grade.score < 1:
        return grade
    unused = sorted((Counter(numbers) - Counter(grade.details["used"])).elements())
    if unused:
        return Grade(0.0, f"{grade.details['answer']} makes the target but leaves {unused} unused", grade.details)
    return grade
