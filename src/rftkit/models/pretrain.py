"""`rft base build`: the recipe that makes the embedded model from nothing, offline, on a CPU.

1. Generate synthetic Countdown puzzles whose completion is the expression that produced the
   target (`<answer>(7+18)-(20-12)</answer>`), skipping any puzzle that appears in the default
   training/validation data, so held-out accuracy is never inflated by memorisation.
2. Train a byte-level BPE tokenizer on that corpus.
3. Train a tiny Qwen2 model on the completions (loss on completion tokens only) for a fixed
   budget of steps: long enough to write well-formed answers, short enough to solve only a
   minority of puzzles, which leaves reinforcement fine-tuning something to do.
4. Save weights (float16 safetensors), config, tokenizer and the recipe's own measurements.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rftkit.atomic import write_json_atomic
from rftkit.models.embedded import EMBEDDED_DIR, IM_END, new_model, train_tokenizer
from rftkit.tasks import countdown


@dataclass
class PretrainRecipe:
    puzzles: int = 60000
    steps: int = 800
    batch_size: int = 96
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    seed: int = 0
    # bfloat16 autocast for the matmuls (float32 master weights and optimizer): 1.6x faster per step
    # on CPUs with native bf16 (AVX512-BF16, AMX), slower elsewhere. The shipped model is the bf16 build;
    # `rft base build --float32` trains without autocast (a different model, see the README).
    bf16: bool = True
    # The default data (examples/countdown.yaml) is countdown seed 1234; puzzles in its first
    # `exclude_size` examples never enter pretraining.
    exclude_seed: int = 1234
    exclude_size: int = 5000


def completion_text(solution: str) -> str:
    return f"<answer>{solution}</answer>{IM_END}"


def _corpus(recipe: PretrainRecipe) -> list[tuple[str, str]]:
    excluded = {(tuple(sorted(e.fields["numbers"])), e.fields["target"])
                for e in countdown.generate(recipe.exclude_size, recipe.exclude_seed)}
    rng = random.Random(f"pretrain-{recipe.seed}")
    opts = countdown.CountdownOptions()
    pairs = []
    while len(pairs) < recipe.puzzles:
        puzzle = countdown.make_puzzle(rng, opts)
        if (tuple(sorted(puzzle["numbers"])), puzzle["target"]) in excluded:
            continue
        pairs.append((countdown.render_prompt(puzzle["numbers"], puzzle["target"]),
                      completion_text(puzzle["solution"])))
    return pairs


def _tokenizer_corpus(pairs: list[tuple[str, str]]):
    """The texts BPE learns from, with the chat roles of the template in them: trained on the bare
    prompts, the tokenizer spelt `assistant` in 9 tokens and `user` in 3, on every row."""
    for prompt, completion in pairs:
        yield f"user\n{prompt}"
        yield f"assistant\n{completion}"


def _encode(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [N, L] ids and a loss mask that is 1 on completion tokens only."""
    # Render the chat template to text, then tokenize every row in one batched call: one
    # apply_chat_template(tokenize=True) per row costs ~15 s for 60,000 puzzles.
    prompt_texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True) for prompt, _ in pairs]
    prompt_rows = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    completion_rows = tokenizer([completion for _, completion in pairs], add_special_tokens=False)["input_ids"]
    width = max(len(p) + len(c) for p, c in zip(prompt_rows, completion_rows))
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
    loss_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_rows, completion_rows)):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        loss_mask[i, len(p):len(p) + len(c)] = 1
    return ids, loss_mask


def _lr_at(step: int, recipe: PretrainRecipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def completion_loss(model, ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over the completion tokens (`loss_mask` 1) of right-padded rows.

    Only completion positions are scored, so the LM head and softmax run on those alone (about a
    fifth of the tokens); the body still sees every token, since answers attend to their prompts.
    """
    predicts_completion = loss_mask[:, 1:].bool()
    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    logits = model.lm_head(hidden[predicts_completion]).float()
    return torch.nn.functional.cross_entropy(logits, ids[:, 1:][predicts_completion])


def train(model, ids: torch.Tensor, loss_mask: torch.Tensor, recipe: PretrainRecipe, log=print) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    # Under bf16 autocast, CPU SDPA's backward is 5x slower than in float32, while eager attention's
    # batched matmuls gain like the rest (L <= 82): train with eager, restore the caller's choice after.
    attention = model.config._attn_implementation
    if recipe.bf16:
        model.set_attn_implementation("eager")
    started = time.time()
    for step in range(recipe.steps):
        batch = torch.randint(0, ids.shape[0], (recipe.batch_size,), generator=generator)
        x, m = ids[batch], loss_mask[batch]
        width = int(m.nonzero()[:, 1].max()) + 1  # completions end each row: trim the shared right padding
        x, m = x[:, :width], m[:, :width]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = completion_loss(model, x, m)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == recipe.steps - 1:
            log(f"pretrain step {step:5d}/{recipe.steps}  loss {loss.item():.4f}  {time.time() - started:6.1f}s")
    model.set_attn_implementation(attention)
    model.eval()


def build(output_dir: str | Path = EMBEDDED_DIR, recipe: PretrainRecipe | None = None, log=print) -> dict:
    """Run the whole recipe and write the model directory; returns its measurements."""
    recipe = recipe or PretrainRecipe()
    started = time.time()
    torch.manual_seed(recipe.seed)
    pairs = _corpus(recipe)
    tokenizer = train_tokenizer(_tokenizer_corpus(pairs[:20000]))
    ids, loss_mask = _encode(tokenizer, pairs)
    model = new_model(tokenizer, seed=recipe.seed)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    log(f"corpus {len(pairs)} puzzles, vocab {len(tokenizer)}, {millions:.2f} M "
        f"parameters, sequence length <= {ids.shape[1]}")
    train(model, ids, loss_mask, recipe, log=log)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    report = {"recipe": asdict(recipe), "wall_seconds": round(time.time() - started, 1),
              "parameters": sum(p.numel() for p in model.parameters())}
    write_json_atomic(output_dir / "recipe.json", report)
    log(f"saved to {output_dir} in {report['wall_seconds']} s")
    return report
