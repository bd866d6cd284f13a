"""rftkit: reinforcement fine-tuning (GRPO, PPO) of language models with LoRA and verifiable graders."""

__version__ = "0.1.0"
