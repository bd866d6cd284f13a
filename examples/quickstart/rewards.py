"""A reward written the way TRL's GRPOTrainer calls it: keyword arguments, one float (or None) per completion."""


def brevity(prompts, completions, **kwargs):
    return [1.0 if len(completion) <= 40 else 0.0 for completion in completions]
