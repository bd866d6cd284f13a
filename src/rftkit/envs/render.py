"""Token ids of an episode's first prompt and of each environment turn, through the model's chat template.

The model's own tokens are kept exactly as sampled (never decoded and re-encoded: a re-tokenisation
can differ from the sampled ids, and the recorded log-probs would then belong to other tokens).
An environment turn is appended as the text the chat template puts between the end of the model's
turn and the start of its next one: rendered once without and once with the environment's messages
after a placeholder assistant turn, the difference is exactly those messages plus the next generation
prompt. The part of the template's end-of-turn text that the model already produced (its stop token,
e.g. `<|im_end|>`) is not repeated; when a turn was cut at `train.max_completion_length`, the whole
end-of-turn text is added, so the next turn always starts where the template would start it.

Without a chat template (`model.chat_template: false`, or a tokenizer that has none) the first prompt
is the example's text as in single-turn runs, and an environment turn is its messages' text on their
own lines.
"""

from __future__ import annotations

from typing import Sequence

from rftkit.data import Example
from rftkit.envs.base import Message
from rftkit.envs.tools import Tool, tool_instructions
from rftkit.models.loading import encode_prompts, stop_token_ids

PLACEHOLDER = "\x1frftkit-placeholder-turn\x1f"


class TemplateError(ValueError):
    """The chat template cannot render environment turns incrementally (the message says which messages)."""


class TurnRenderer:
    def __init__(self, tokenizer, chat_template: bool, system_prompt: str | None):
        self.tokenizer, self.system_prompt = tokenizer, system_prompt
        self.templated = bool(chat_template and tokenizer.chat_template)
        template = tokenizer.chat_template if self.templated else ""
        self.takes_tools = isinstance(template, str) and "tools" in template
        self.stop_ids = stop_token_ids(tokenizer)
        self._tool_role = True  # flips to False when the template refuses role 'tool'

    def prompt_ids(self, example: Example, messages: Sequence[Message] | None, tools: Sequence[Tool]) -> list[int]:
        """The first prompt. With neither environment messages nor tools this is exactly the single-turn
        prompt (`encode_prompts`), so a one-turn episode samples its first turn from the same tokens."""
        if messages is None and not tools:
            return encode_prompts(self.tokenizer, [example], self.templated, self.system_prompt)[0]
        turns = [dict(m) for m in (messages if messages is not None else example.chat(self.system_prompt))]
        if not self.templated:
            if tools:
                turns.insert(0, {"role": "system", "content": tool_instructions(tools)})
            return self.tokenizer.encode("\n".join(t["content"] for t in turns), add_special_tokens=True)
        if tools and self.takes_tools:
            ids = self.tokenizer.apply_chat_template(turns, tools=[t.schema() for t in tools], tokenize=True,
                                                     add_generation_prompt=True, return_dict=False)
            return list(ids)
        if tools:
            if turns and turns[0]["role"] == "system":
                turns[0] = {"role": "system", "content": turns[0]["content"] + "\n\n" + tool_instructions(tools)}
            else:
                turns.insert(0, {"role": "system", "content": tool_instructions(tools)})
        return list(self.tokenizer.apply_chat_template(turns, tokenize=True, add_generation_prompt=True,
                                                       return_dict=False))

    def env_ids(self, messages: Sequence[Message], stopped_with: int | None) -> list[int]:
        """Token ids of one environment turn after a model turn that ended with token `stopped_with`
        (a stop token), or was cut (None)."""
        if not self.templated:
            text = "\n" + "\n".join(m["content"] for m in messages) + "\n"
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        closing, opening = self._delta(messages)
        if stopped_with is not None:
            stop_text = self.tokenizer.decode([stopped_with])
            if stop_text and closing.startswith(stop_text):
                closing = closing[len(stop_text):]
        return self.tokenizer(closing + opening, add_special_tokens=False)["input_ids"]

    def _delta(self, messages: Sequence[Message]) -> tuple[str, str]:
        """(end-of-turn text after an assistant message, the messages' text + the next generation prompt)."""
        turns = [dict(m) for m in messages]
        if not self._tool_role:
            turns = [_as_user(m) for m in turns]
        try:
            return self._render_delta(turns)
        except TemplateError:
            raise
        except Exception as exc:  # jinja's TemplateError and friends: the template refuses a role
            if not self._tool_role or not any(m["role"] == "tool" for m in turns):
                raise TemplateError(f"the chat template cannot render environment messages {_roles(turns)} "
                                    f"after an assistant turn: {exc}") from exc
            self._tool_role = False  # this template has no tool role: results come back as user turns
            return self._delta(messages)

    def _render_delta(self, turns: list[dict]) -> tuple[str, str]:
        base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": PLACEHOLDER}]
        before = self.tokenizer.apply_chat_template(base, tokenize=False)
        after = self.tokenizer.apply_chat_template(base + turns, tokenize=False, add_generation_prompt=True)
        if not after.startswith(before) or PLACEHOLDER not in before:
            raise TemplateError(f"the chat template does not render a conversation incrementally (appending "
                                f"{_roles(turns)} changes what comes before them), so environment turns cannot be "
                                "appended to sampled tokens; use a template that does, or model.chat_template: false")
        closing = before[before.rindex(PLACEHOLDER) + len(PLACEHOLDER):]
        return closing, after[len(before):]


def _as_user(message: dict) -> dict:
    if message["role"] != "tool":
        return message
    return {"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"}


def _roles(turns: Sequence[dict]) -> str:
    return "[" + ", ".join(repr(t["role"]) for t in turns) + "]"
