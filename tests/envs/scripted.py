"""A scripted stand-in for the model: a rollout backend whose every turn is text a test chooses.

`ScriptedBackend(reply)` answers each sampled turn with `reply(prompt_text, turn)` (turn counts from 1),
tokenised, followed by the tokenizer's EOS, with log-prob -0.5 per token: episodes then run without a
model, deterministically, so a test can make the model call a tool, misformat a call or run out of turns.
"""

from __future__ import annotations

import torch

from rftkit.rollout.sampler import left_pad
from rftkit.types import RolloutBatch


class ScriptedBackend:
    def __init__(self, reply, stop: bool = True):
        self.reply, self.stop, self.calls = reply, stop, []

    def generate(self, policy, tokenizer, examples, settings, generator, policy_version=0, prompts=None):
        g = settings.num_generations
        rows = [ids for ids in prompts for _ in range(g)]
        texts = [tokenizer.decode(ids) for ids in rows]
        self.calls.append(texts)
        sampled = []
        for text in texts:
            turn = text.count("<|im_start|>assistant")
            ids = tokenizer(self.reply(text, turn), add_special_tokens=False)["input_ids"]
            ids = (ids + [tokenizer.eos_token_id] if self.stop else ids)[:settings.max_new_tokens]
            sampled.append(ids)
        width = max(1, max(len(s) for s in sampled))
        completion_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(sampled):
            completion_ids[i, :len(ids)] = torch.tensor(ids)
            completion_mask[i, :len(ids)] = 1
        prompt_ids, prompt_mask = left_pad(rows, tokenizer.pad_token_id)
        return RolloutBatch([e for e in examples for _ in range(g)], [tokenizer.decode(s) for s in sampled],
                            prompt_ids, prompt_mask, completion_ids, completion_mask,
                            -0.5 * completion_mask.float(), g, policy_version)
