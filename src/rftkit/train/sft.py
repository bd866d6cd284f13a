"""LoRA supervised fine-tuning on prompt -> completion pairs: `rft sft` and the `sft_warmup:` stage.

The loss is the mean negative log-likelihood of completion tokens only (prompt tokens are
context, not targets), computed with the same `token_logprobs` the RL update uses, so the
prompt rendering (chat template, system prompt) is exactly the one RFT and validation see.
The completion comes from a dataset field (`sft.completion_field`), formatted by
`sft.completion_format`, with the tokenizer's EOS appended so the model learns to stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rftkit.atomic import write_json_atomic
from rftkit.config import ConfigError, RFTConfig, SftConfig, dump_config
from rftkit.data import DataError, Example
from rftkit.models.loading import encode_prompts
from rftkit.rollout.sampler import left_pad
from rftkit.train.process import adamw
from rftkit.models.forward import token_logprobs
from rftkit.train.update import training_mode


@dataclass
class SftBatch:
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T] right-padded, EOS last
    completion_mask: torch.Tensor  # [N, T]


def completion_for(example: Example, cfg: SftConfig) -> str:
    if cfg.completion_field not in example.fields:
        raise DataError(f"sft.completion_field: example {example.id!r} has no field {cfg.completion_field!r}; "
                        f"its fields are {sorted(example.fields)}")
    return cfg.completion_format.format(completion=example.fields[cfg.completion_field])


def encode_pairs(tokenizer, examples: list[Example], completions: list[str], chat_template: bool,
                 system_prompt: str | None, device: torch.device | str = "cpu") -> SftBatch:
    prompt_ids, prompt_mask = left_pad(encode_prompts(tokenizer, examples, chat_template, system_prompt),
                                       tokenizer.pad_token_id)
    targets = [tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] for text in completions]
    width = max(len(t) for t in targets)
    completion_ids = torch.full((len(targets), width), tokenizer.pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((len(targets), width), dtype=torch.long)
    for row, ids in enumerate(targets):
        completion_ids[row, :len(ids)] = torch.tensor(ids)
        completion_mask[row, :len(ids)] = 1
    return SftBatch(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device),
                    completion_mask.to(device))


def sft_loss(policy, batch: SftBatch, fused_forward: str = "auto") -> torch.Tensor:
    """Mean NLL over completion tokens (token-level mean over the batch)."""
    logp, _ = token_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                             batch.completion_mask, temperature=1.0, fused_forward=fused_forward)
    mask = batch.completion_mask[:, :logp.shape[1]].float()
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)


def new_optimizer(params, cfg: SftConfig, config: RFTConfig) -> torch.optim.Optimizer:
    return adamw(params, cfg.learning_rate, config.train.weight_decay)


def run_sft(policy, tokenizer, examples: list[Example], cfg: SftConfig, config: RFTConfig, params,
            optimizer: torch.optim.Optimizer, on_step=None) -> dict:
    """Train the LoRA adapter of `policy` in place; `on_step(step, loss, final)` may validate/log."""
    completions = [completion_for(e, cfg) for e in examples]
    device = next(policy.parameters()).device
    generator = torch.Generator().manual_seed(config.train.seed + 17)  # apart from the rollout stream
    spent, step, loss = 0.0, 0, float("nan")
    while step < cfg.steps and (cfg.max_seconds is None or spent < cfg.max_seconds):
        started = time.perf_counter()
        pick = torch.randint(0, len(examples), (cfg.batch_size,), generator=generator).tolist()
        batch = encode_pairs(tokenizer, [examples[i] for i in pick], [completions[i] for i in pick],
                             config.model.chat_template, config.data.system_prompt, device)
        optimizer.zero_grad(set_to_none=True)
        with training_mode(policy, config.train.gradient_checkpointing):
            fused = "off" if config.train.gradient_checkpointing else config.train.fused_forward
            value = sft_loss(policy, batch, fused)
            value.backward()
        torch.nn.utils.clip_grad_norm_(params, config.train.max_grad_norm)
        optimizer.step()
        step, loss = step + 1, value.item()
        spent += time.perf_counter() - started
        if on_step is not None:
            on_step(step, loss, step >= cfg.steps or (cfg.max_seconds is not None and spent >= cfg.max_seconds))
    return {"sft_steps": step, "sft_seconds": round(spent, 1), "sft_final_loss": loss, "sft_examples": len(examples)}


def sft(config: RFTConfig, run_dir: str | Path, progress: bool = True) -> dict:
    """`rft sft`: SFT with validation before, every `sft.eval_every` steps, and at the end; saves the adapter.

    As in `rft train`, `eval.keep_best` keeps the adapter with the best validation value (a validation after
    training started: step 0 is the base model) as checkpoints/best, and `data.test_size` prompts are scored
    once at the end with that adapter (or the final one): the summary's "test".
    """
    from rftkit.train.checkpoint import TrainerState, save_checkpoint
    from rftkit.eval.validate import EvalSettings, evaluate
    from rftkit.rollout import build_backend
    from rftkit.graders import build_graders
    from rftkit.logging.sinks import JsonlSink
    from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer, lora_parameters, resolve_device
    from rftkit.tasks import load_splits
    from rftkit.train.selection import best_dir, chosen_policy, keep_if_best
    from rftkit.train.process import seed_everything, set_threads

    if config.lora is None:
        raise ConfigError("lora: null (full-weight) is for `rft train`; `rft sft` trains a LoRA adapter")
    run_dir = Path(run_dir)
    set_threads(config.train.threads)
    device = resolve_device(config.model.device)
    seed_everything(config.train.seed, device)
    train_examples, val_examples, test_examples = load_splits(config.data, config.env)
    tokenizer = load_tokenizer(config.model)
    graders = build_graders(config.graders)
    policy = attach_lora(load_base_model(config.model, device), config.lora)
    params = lora_parameters(policy)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    metrics = JsonlSink(run_dir / "metrics.jsonl", truncate_after_step=-1)
    backend, settings = build_backend(config, run_dir), EvalSettings.of(config)
    before = evaluate(policy, tokenizer, val_examples, graders, settings, backend).metrics
    metrics.write({"step": 0} | {f"val/{k}": v for k, v in before.items()})
    last, best = dict(before), {}

    def on_step(step: int, loss: float, final: bool) -> None:
        record = {"step": step, "loss/sft": loss}
        if final or step % config.sft.eval_every == 0:
            last.update(evaluate(policy, tokenizer, val_examples, graders, settings, backend).metrics)
            record.update({f"val/{k}": v for k, v in last.items()})
            best.update(keep_if_best(config.eval.keep_best, best, step, last, policy, run_dir) or {})
        metrics.write(record)
        if progress and (final or step % 25 == 0):
            print(f"sft step {step}: loss {loss:.4f}" + (f"  val/accuracy {last['accuracy']:.3f}" if final else ""))

    optimizer = new_optimizer(params, config.sft, config)
    summary = run_sft(policy, tokenizer, train_examples, config.sft, config, params, optimizer, on_step)
    state = TrainerState(step=summary["sft_steps"], data_epoch=0, data_cursor=0, before=before, last_validation=last)
    saved = save_checkpoint(run_dir, policy, optimizer, state)
    summary |= {"before": before, "after": last, "validation_size": len(val_examples),
                "train_size": len(train_examples), "seed": config.train.seed}
    if best:
        summary["best"] = dict(best)
    summary["best_checkpoint"] = str(best_dir(run_dir) if best else saved)
    if test_examples:
        chosen = chosen_policy(config, run_dir, policy, device)
        test = evaluate(chosen, tokenizer, test_examples, graders, settings, backend).metrics
        summary |= {"test": test, "test_size": len(test_examples)}
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
