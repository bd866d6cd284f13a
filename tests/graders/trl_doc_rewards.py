"""The reward functions of TRL's GRPOTrainer documentation, copied verbatim.

Source: huggingface/trl, docs/source/grpo_trainer.md, section "Using a custom reward function"
(commit f2cd57710ae345ea6428ae95363267fcf38a3dc8), https://huggingface.co/docs/trl/grpo_trainer.
The examples reuse the names `reward_func` and `async_reward_func`; each is kept under the
name of its example (the bodies are unchanged). Example 4's `check_math_solution` and
`test_code_solution` are not defined in the documentation; the two stubs at the end are ours.
"""

import asyncio
import re


# Example 1: Reward longer completions
def reward_func(completion_ids, **kwargs):
    """Reward function that assigns higher scores to longer completions (in terms of token count)."""
    return [float(len(ids)) for ids in completion_ids]


example_1 = reward_func


# Example 1.1: Reward longer completions (based on the number of characters)
def reward_func(completions, **kwargs):
    """Reward function that assigns higher scores to longer completions (in terms of character count)."""
    return [float(len(completion)) for completion in completions]


example_1_1 = reward_func


# Example 2: Reward completions with a specific format
def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


# Example 3: Reward completions based on a reference
def reward_func(completions, ground_truth, **kwargs):
    # Regular expression to capture content inside \boxed{}
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]


example_3 = reward_func


# Example 4: Multi-task reward functions
# Math-specific reward function
def math_reward_func(prompts, completions, task, **kwargs):
    rewards = []
    for prompt, completion, t in zip(prompts, completions, task):
        if t == "math":
            # Calculate math-specific reward
            correct = check_math_solution(prompt, completion)
            reward = 1.0 if correct else -1.0
            rewards.append(reward)
        else:
            # Return None for non-math tasks
            rewards.append(None)
    return rewards

# Coding-specific reward function
def coding_reward_func(prompts, completions, task, **kwargs):
    rewards = []
    for prompt, completion, t in zip(prompts, completions, task):
        if t == "coding":
            # Calculate coding-specific reward
            works = test_code_solution(prompt, completion)
            reward = 1.0 if works else -1.0
            rewards.append(reward)
        else:
            # Return None for non-coding tasks
            rewards.append(None)
    return rewards


# Example 5: Asynchronous reward functions
async def async_reward_func(prompts, completions, **kwargs):
    # Simulate an I/O-bound call (e.g., HTTP request, database lookup)
    await asyncio.sleep(0.01)
    # Simple toy reward: 1.0 if the completion is non-empty, else 0.0
    return [1.0 if completion else 0.0 for completion in completions]


# Example 6: Logging extra columns and metrics
def reward_func(completions, ground_truth, log_extra=None, log_metric=None, **kwargs):
    extracted = [re.search(r"\\boxed\{(.*?)\}", c) for c in completions]
    extracted = [m.group(1) if m else None for m in extracted]
    rewards = [1.0 if e == gt else 0.0 for e, gt in zip(extracted, ground_truth)]

    if log_extra:
        log_extra("golden_answer", list(ground_truth))
        log_extra("extracted_answer", [e or "[none]" for e in extracted])

    if log_metric:
        log_metric("accuracy", sum(rewards) / len(rewards))

    return rewards


example_6 = reward_func


# Ours, not the documentation's: the helpers Example 4 leaves undefined.
def check_math_solution(prompt, completion):
    return completion.strip() == {"What is 2+2?": "4", "What is 3*4?": "12"}.get(prompt)


def test_code_solution(prompt, completion):
    return "return" in completion


test_code_solution.__test__ = False  # a helper named test_*, not a test
