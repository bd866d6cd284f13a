"""Graders that build runs which trigger each alarm (loaded by file path: `function: "PATH:name"`)."""

from rftkit.graders.base import Grade

TRAIN_CALLS = [0]
PER_STEP = 8  # batch_size 2 x num_generations 4 in the tests' tiny config


def constant(example, completion):
    """Every completion scores the same: every group ties (no signal)."""
    return 0.5


def judge_down(example, completion):
    """What an LLM judge whose endpoint is down gives after its retries: a masked grade."""
    return Grade(0.0, "judge endpoint unreachable (connection refused)", masked=True)


def drifting(example, completion):
    """Training reward rises with every training completion graded, while held-out rows (fields k = 0..7)
    pass only while k >= the steps trained so far: validation accuracy falls one row per step."""
    if example.fields["split"] == "train":
        TRAIN_CALLS[0] += 1
        return min(1.0, TRAIN_CALLS[0] / 1000)
    return 1.0 if example.fields["k"] >= TRAIN_CALLS[0] // PER_STEP else 0.0
