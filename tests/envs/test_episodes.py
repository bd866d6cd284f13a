"""Multi-turn episodes: the token layout and its masks, limits, failing environments, the one-turn case.

The two properties the update relies on: environment tokens carry no gradient (the loss's gradient
at their logits is exactly 0), and the log-probs recorded while sampling the model's turns are those
a fresh forward over the whole trajectory gives (so they are pi_old without another forward).
"""

from dataclasses import dataclass, replace

import pytest
import torch

from rftkit.algorithms.losses import LossSettings
from rftkit.config import DataConfig, LoraConfig, ModelConfig
from rftkit.data import Example
from rftkit.envs.base import EnvironmentFailure, EnvReply, EpisodeStart, Transcript
from rftkit.envs.countdown_feedback import CountdownFeedback
from rftkit.envs.episodes import EpisodeBackend, EpisodeLimits
from rftkit.models.forward import token_logprobs
from rftkit.models.loading import attach_lora, encode_prompts, load_base_model, load_tokenizer
from rftkit.rollout import HFBackend
from rftkit.tasks import load_examples
from rftkit.train.update import Learner, UpdateSettings, update_policy
from rftkit.types import SamplingSettings, UpdateTargets
from tests.conftest import randomise_lora
from tests.envs.scripted import ScriptedBackend


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(ModelConfig())
    policy = attach_lora(load_base_model(ModelConfig()), LoraConfig(r=4))
    randomise_lora(policy, seed=0, scale=0.02)  # a non-zero adapter, so the log-probs depend on it
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    return policy, tokenizer, examples


@pytest.fixture(scope="module")
def episodes(model):
    """3-turn countdown_feedback episodes sampled from the embedded model (2 prompts x 3 samples)."""
    policy, tokenizer, examples = model
    backend = EpisodeBackend(HFBackend("off"), CountdownFeedback(), EpisodeLimits(max_turns=3, max_tokens=120))
    batch = backend.generate(policy, tokenizer, examples[:2], SamplingSettings(3, 24, 1.0),
                             torch.Generator().manual_seed(3))
    return batch


def test_layout_masks_and_messages(model, episodes):
    _, tokenizer, examples = model
    batch = episodes
    assert batch.action_mask is not None and batch.episodes is not None and len(batch.episodes) == 6
    assert (batch.action_mask <= batch.completion_mask).all()
    multi = [i for i, e in enumerate(batch.episodes) if e.model_turns > 1]
    assert multi, "some episode should need a second turn"
    for i in multi:
        episode = batch.episodes[i]
        env_tokens = (batch.completion_mask[i] - batch.action_mask[i]).bool()
        assert env_tokens.any() and (batch.old_logprobs[i][env_tokens] == 0).all()
        text = tokenizer.decode(batch.completion_ids[i][env_tokens])
        feedback = [m["content"] for m in episode.messages if m["role"] == "user"]
        assert all(f in text for f in feedback) and "<|im_start|>user" in text and "<|im_start|>assistant" in text
        roles = [m["role"] for m in episode.messages]
        assert roles[0] == "assistant" and roles[-1] == "assistant"
        assert roles == ["assistant", "user"] * (episode.model_turns - 1) + ["assistant"]
    # the G rows of an example share its first prompt, exactly the single-turn prompt
    single = encode_prompts(tokenizer, examples[:2], True, None)
    for i in range(6):
        ids = batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist()
        assert ids == single[i // 3]
    assert isinstance(batch.completions[0], Transcript)
    assert batch.completions[0] == batch.episodes[0].final_reply


def test_recorded_logprobs_equal_a_fresh_forward_over_the_trajectory(model, episodes):
    policy, _, _ = model
    batch = episodes
    fresh, _ = token_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                              batch.completion_mask, 1.0)
    width = fresh.shape[1]
    model_tokens = batch.action_mask[:, :width].bool()
    later = model_tokens.clone()  # the model tokens of turns 2 and 3 (they see environment tokens before them)
    for i in range(len(later)):
        first_env = (batch.completion_mask[i] - batch.action_mask[i]).nonzero()
        later[i, :int(first_env[0]) if len(first_env) else width] = False
    assert later.sum() > 10
    torch.testing.assert_close(batch.old_logprobs[:, :width][model_tokens], fresh[model_tokens], atol=2e-5, rtol=1e-5)


def _update_grads(policy, batch, advantages, old_logprobs=None):
    """The gradient of one update's loss w.r.t. the LM head's output logits (rows: the real completion tokens,
    row-major), and the LoRA gradients."""
    captured = []
    head = policy.get_base_model().lm_head
    def keep(module, args, out):
        out.retain_grad()
        captured.append(out)

    hook = head.register_forward_hook(keep)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0: weights stay, gradients stay readable
    if old_logprobs is not None:
        batch = replace(batch, old_logprobs=old_logprobs)
    try:
        update_policy(Learner(policy, optimizer, params), batch, UpdateTargets(advantages, None),
                      torch.ones(len(batch.completions)), UpdateSettings(LossSettings("clipped_surrogate", 0.2, None,
                                                                                       0.0, "token"), 1.0, 64, 1e9,
                                                                          fused_forward="on"))
    finally:
        hook.remove()
    assert len(captured) == 1
    return captured[0].grad, [p.grad.clone() for p in params]


def test_environment_tokens_get_zero_gradient(model, episodes):
    policy, _, _ = model
    batch = episodes
    advantages = torch.linspace(-1.0, 1.0, len(batch.completions))
    grad, lora_grads = _update_grads(policy, batch, advantages)
    real = batch.completion_mask[:, :batch.completion_mask.sum(-1).max()].bool()
    is_model = batch.action_mask[:, :real.shape[1]][real].bool()  # [M] per real completion token, row-major
    assert grad.shape[0] == is_model.numel() and (~is_model).sum() > 0
    assert (grad[~is_model] == 0).all()  # environment tokens: exactly zero
    assert (grad[is_model].abs().sum(-1) > 0).float().mean() > 0.9  # model tokens carry the gradient
    # ... and nothing recorded on environment tokens can change the update
    noisy = batch.old_logprobs + (batch.completion_mask - batch.action_mask) * torch.randn(batch.old_logprobs.shape)
    _, noisy_grads = _update_grads(policy, batch, advantages, noisy)
    assert all(torch.equal(a, b) for a, b in zip(lora_grads, noisy_grads))


def _scripted(reply, env, max_turns=3, max_tokens=200, g=2, max_new_tokens=32, examples=None):
    tokenizer = load_tokenizer(ModelConfig())
    examples = examples or load_examples(DataConfig(train_size=4, val_size=2))[0][:2]
    backend = EpisodeBackend(ScriptedBackend(reply), env, EpisodeLimits(max_turns, max_tokens))
    return backend.generate(None, tokenizer, examples, SamplingSettings(g, max_new_tokens, 1.0),
                            torch.Generator())


def test_max_turns_ends_the_episode_and_the_environment_sees_the_last_turn():
    env = CountdownFeedback()
    batch = _scripted(lambda prompt, turn: f"<answer>1+{turn}</answer>", env, max_turns=2)
    for episode in batch.episodes:
        assert episode.finish == "max_turns" and episode.model_turns == 2
        assert len(episode.state.verdicts) == 2  # the environment judged the second (last) turn too
        assert episode.outcome.score == 0.0 and "not solved in 2" in episode.outcome.reason
    assert batch.episodes[0].messages[1]["content"].startswith("1+1 = 2, ")  # what it evaluates to, then what is wrong


def test_a_correct_answer_ends_the_episode_at_that_turn():
    examples = load_examples(DataConfig(train_size=4, val_size=2))[0][:1]
    solution = examples[0].fields["solution"]
    batch = _scripted(lambda prompt, turn: "<answer>1</answer>" if turn == 1 else f"<answer>{solution}</answer>",
                      CountdownFeedback(), examples=examples)
    episode = batch.episodes[0]
    assert episode.finish == "environment" and episode.model_turns == 2 and episode.outcome.score == 1.0
    assert batch.completions[0] == f"<answer>{solution}</answer>"


def test_the_token_budget_cuts_a_turn_and_never_shows_an_observation_without_room():
    tokenizer = load_tokenizer(ModelConfig())
    long = "<answer>" + "1+" * 30 + "1</answer>"
    batch = _scripted(lambda prompt, turn: long, CountdownFeedback(), max_tokens=40, max_new_tokens=80)
    for i, episode in enumerate(batch.episodes):
        assert episode.finish == "token_budget" and episode.tokens == 40 == int(batch.completion_mask[i].sum())
        assert episode.model_turns == 1 and int(batch.action_mask[i].sum()) == 40  # the turn was cut at 40
    prompt_len = len(tokenizer(long, add_special_tokens=False)["input_ids"])
    budget = prompt_len + 1 + 12  # room for turn 1 and a little: the feedback does not fit, so it is not shown
    batch = _scripted(lambda prompt, turn: long, CountdownFeedback(), max_tokens=budget, max_new_tokens=80)
    for i, episode in enumerate(batch.episodes):
        assert episode.finish == "token_budget" and episode.model_turns == 1
        assert int(batch.completion_mask[i].sum()) == int(batch.action_mask[i].sum()) == prompt_len + 1


@dataclass
class Raising:
    where: str
    name: str = "raising"
    tools: tuple = ()

    def reset(self, example):
        if self.where == "reset":
            raise KeyError("no such field")
        return EpisodeStart(None)

    def step(self, state, reply):
        if self.where == "step":
            raise ZeroDivisionError("division by zero in the world")
        return EnvReply(done=True)

    def close(self, state, reason):
        return None

    def score(self, states):
        if self.where == "score":
            raise RuntimeError("scoring broke")
        return [None] * len(states)


@pytest.mark.parametrize("where,message", [("reset", "KeyError in reset"), ("step", "ZeroDivisionError in step"),
                                           ("score", "RuntimeError in score")])
def test_an_environment_that_raises_stops_with_a_clear_error(where, message):
    with pytest.raises(EnvironmentFailure, match=f"environment 'raising' raised {message} \\(example '"):
        _scripted(lambda prompt, turn: "<answer>1</answer>", Raising(where))


def test_a_one_turn_episode_is_the_single_turn_row(model):
    """One turn, ended by the environment: the same tokens, log-probs and mask as the single-turn batch."""
    policy, tokenizer, examples = model
    settings = SamplingSettings(3, 24, 1.0)
    single = HFBackend("off").generate(policy, tokenizer, examples[:2], settings, torch.Generator().manual_seed(5))

    @dataclass
    class OneTurn:
        name: str = "one_turn"
        tools: tuple = ()

        def reset(self, example):
            return EpisodeStart(None)

        def step(self, state, reply):
            return EnvReply(done=True)

        def close(self, state, reason):
            return None

        def score(self, states):
            return [None] * len(states)

    episodic = EpisodeBackend(HFBackend("off"), OneTurn(), EpisodeLimits(3, 24)).generate(
        policy, tokenizer, examples[:2], settings, torch.Generator().manual_seed(5))
    assert torch.equal(single.completion_ids, episodic.completion_ids)
    assert torch.equal(single.completion_mask, episodic.completion_mask)
    assert torch.equal(episodic.action_mask, episodic.completion_mask)
    assert torch.equal(single.old_logprobs, episodic.old_logprobs)
    assert torch.equal(single.prompt_ids, episodic.prompt_ids)
    assert list(single.completions) == list(episodic.completions)


def test_rows_and_to_keep_the_episode_fields(episodes):
    picked = episodes.rows(torch.tensor([4, 1]))
    assert picked.episodes == [episodes.episodes[4], episodes.episodes[1]]
    assert torch.equal(picked.action_mask, episodes.action_mask[[4, 1]])
    assert picked.to("cpu").action_mask is not None


def test_examples_without_the_puzzle_fields_are_a_clear_error():
    with pytest.raises(EnvironmentFailure, match="countdown graders need integer fields"):
        _scripted(lambda p, t: "x", CountdownFeedback(), examples=[Example("bad", prompt="hello")])
