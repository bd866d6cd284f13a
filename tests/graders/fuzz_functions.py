"""A TRL-style reward function for the fuzz test: it reads the text, the columns and the token ids."""


def bounded_reward(prompts, completions, completion_ids=None, answer=None, **kwargs):
    return [float(str(a) in c) if len(c) < 100_000 else None for c, a in zip(completions, answer or [])]
