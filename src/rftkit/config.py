"""The user-facing configuration: YAML maps 1:1 onto these pydantic models.

Every field is documented once, here (the README's key reference is generated from these
docstrings by `rft config-reference`). Unknown keys are errors; every error names the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field("embedded", description="'embedded' (the bundled tiny Countdown model), a hub name such as "
                      "'Qwen/Qwen2.5-0.5B-Instruct' (must already be in the local HF cache: nothing is downloaded "
                      "unless allow_download is true), or a local directory with config.json and a tokenizer.")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="Where the model and every "
                        "tensor of sampling, update, evaluation and SFT live: 'auto' (CUDA when available, else "
                        "CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'. Under torchrun, 'auto' and 'cuda' mean each "
                        "rank's own GPU (cuda:LOCAL_RANK).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype of the base model. 'auto': bfloat16 on a CUDA device that supports it "
        "(compute capability 8.0+), float32 everywhere else (CPU, MPS, older GPUs).")
    allow_download: bool = Field(False, description="Let transformers fetch the model from the hub if it is not "
                                 "cached.")
    chat_template: bool = Field(True, description="Render prompts through the tokenizer's chat template "
                                "(false: the raw prompt text is the model input).")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = lora_alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input. Keep 0 for RL: dropout "
                                "makes the sampling-time log-probs disagree with the training forward.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer but the LM head.")


class ScreenConfig(Section):
    """`data.screen`: train only on the prompts an `rft screen` result marks as worth it. README: Small-data tools."""

    result: str = Field(description="The screen.json that `rft screen` wrote (each training prompt's pass count "
                        "out of k). Every training prompt must be in it, unchanged; otherwise the run stops and says "
                        "to screen again.")
    keep: list[Literal["informative", "never_solved", "always_solved"]] = Field(
        default_factory=lambda: ["informative"], min_length=1, description="Which prompts to train on: "
        "'informative' (solved by some but not all of the k samples: the groups GRPO learns from), "
        "'never_solved', 'always_solved'.")


class DataConfig(Section):
    source: str = Field("countdown", description="A built-in task generator ('countdown'), a JSONL file path, "
                        "or 'hf:NAME' for a Hugging Face dataset.")
    val_source: str | None = Field(None, description="Held-out data from a separate JSONL/'hf:' source; when unset "
                                   "the validation set is split off `source` deterministically.")
    hf_split: str = Field("train", description="Split to read for 'hf:' sources.")
    train_size: int | None = Field(None, ge=1, description="Training prompts to use (generators: how many to make; "
                                   "files: keep the first N after the split). null = all.")
    val_size: int = Field(500, ge=1, description="Held-out prompts for validation (never trained on): they choose "
                          "(eval.keep_best) and warn of overfitting.")
    test_size: int = Field(0, ge=0, description="Held-out prompts for the test split, apart from validation and "
                           "training: scored once at the end with the chosen checkpoint, and what the summary "
                           "reports as `test`. 0: no test split.")
    seed: int = Field(1234, description="Seed for the generator and for the train/validation split.")
    options: dict[str, Any] = Field(default_factory=dict, description="Task-generator options "
                                    "(countdown: min_numbers, max_numbers, max_number, max_target).")
    system_prompt: str | None = Field(None, description="A system turn prepended to every prompt (null: the "
                                      "task's own, if any).")
    max_prompt_length: int = Field(4096, ge=1, description="Longest prompt in tokens (chat template and system "
                                   "prompt included); a longer training or validation prompt stops the run before "
                                   "any step, naming the example, instead of exhausting memory in the sampler.")
    screen: ScreenConfig | None = Field(None, description="Filter the training prompts by an `rft screen` result "
                                        "before training (validation and test are never filtered): a path to its "
                                        "screen.json (keeps the informative prompts) or the `data.screen.` keys "
                                        "below. null: train on every prompt.")

    @field_validator("screen", mode="before")
    @classmethod
    def _screen_path(cls, value: Any) -> Any:
        return {"result": value} if isinstance(value, str) else value


class GraderSpec(BaseModel):
    """One named grader: `type` picks the implementation; its parameters sit beside these keys."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Name used in metrics (`reward/<name>`) and in formulas.")
    type: str = Field(description="Grader type; see the README's grader reference.")
    weight: float = Field(1.0, ge=0, description="Weight of this grader in the reward (weighted mean).")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GrpoConfig(Section):
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group size G).")
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL penalty to the reference (adapter disabled). "
                        "0 skips the reference forward entirely.")
    epsilon: float = Field(0.2, gt=0, description="Clip range of the policy ratio: [1 - epsilon, 1 + epsilon].")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip bound if different from epsilon "
                                       "(DAPO's clip-higher).")
    scale_rewards: bool = Field(True, description="Divide group-centred rewards by the group's std (GRPO); "
                                "false keeps only the centring (Dr. GRPO).")
    num_iterations: int = Field(1, ge=1, description="Optimisation passes over each sampled batch (GRPO's mu).")
    loss_aggregation: Literal["sequence", "token"] = Field(
        "sequence", description="'sequence': mean over each completion's tokens then over completions (GRPO); "
        "'token': mean over all tokens of the batch (DAPO).")


class TrainConfig(Section):
    steps: int = Field(900, ge=1, description="Optimizer steps (one sampled batch each, times num_iterations).")
    batch_size: int = Field(8, ge=1, description="Prompts per step; each gets num_generations completions.")
    micro_batch_size: int = Field(64, ge=1, description="Completions per forward/backward in the update.")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate for the LoRA parameters.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (global L2 norm).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling for rollouts (1 = off).")
    max_completion_length: int = Field(32, ge=1, description="Maximum new tokens per completion.")
    seed: int = Field(0, description="Seed for torch, python and numpy RNGs (sampling, LoRA init, data order).")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (null: one per physical core).")
    max_seconds: float | None = Field(None, gt=0, description="Stop early after this many seconds of training "
                                      "(generate + grade + update; validation not counted), for equal wall-clock "
                                      "budgets across algorithms. null: run all `steps`.")
    fused_forward: Literal["auto", "on", "off"] = Field(
        "auto", description="The update's forward through rftkit's fused Qwen2/Llama LoRA kernels: 'auto' where "
        "the policy is supported, else the model's own forward; 'on': refuse a policy they do not support; "
        "'off': always the model's own forward (the reference the kernels are tested against).")
    gradient_checkpointing: bool = Field(False, description="Recompute each decoder layer's activations in the "
                                         "backward instead of storing them (less memory for larger models, about "
                                         "a third more update time). Uses transformers' checkpointing, so the "
                                         "update runs through the model's own forward.")


class EvalConfig(Section):
    eval_every: int = Field(100, ge=1, description="Validate every N steps (and always at the start and the end).")
    batch_size: int = Field(250, ge=1, description="Held-out prompts per generation batch.")
    temperature: float = Field(1.0, gt=0, description="Temperature of the sampled-accuracy pass (the greedy pass "
                               "is always argmax).")
    max_completion_length: int | None = Field(None, ge=1, description="null: same as train.max_completion_length.")
    overfit_patience: int = Field(3, ge=2, description="Warn when validation accuracy fell this many evaluations in "
                                  "a row while the training reward rose.")
    keep_best: Literal["accuracy", "accuracy_greedy", "mean_reward"] | None = Field(
        None, description="Keep the checkpoint with the highest validation value of this metric as "
        "checkpoints/best (chosen on validation, never on the test split); null: the last checkpoint is the result.")


class TrackingConfig(Section):
    """Where a run's metrics go besides metrics.jsonl (always written): the trackers `report_to` names.
    README: Tracking and alarms."""

    project: str = Field("rftkit", description="MLflow experiment, W&B project and Trackio project the run is "
                         "logged under.")
    run_name: str | None = Field(None, description="The run's name in the trackers (null: the run directory's "
                                 "name).")
    mlflow_tracking_uri: str | None = Field(None, description="mlflow: where runs are stored (a server URL, "
                                            "'sqlite:///mlflow.db', 'file:PATH'); null: $MLFLOW_TRACKING_URI, else "
                                            "a file store in RUN_DIR/mlruns (`mlflow ui --backend-store-uri "
                                            "RUN_DIR/mlruns`).")
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="wandb: 'offline' writes RUN_DIR/wandb/ for a later `wandb sync`; null: $WANDB_MODE, "
        "else W&B's default (online, needing `wandb login`).")


class AlarmsConfig(Section):
    """Checks that catch a wasted run: each warns in the log, sets `alarm/<name>` = 1 in the step's metrics and
    shows as a banner in `rft report`; `stop_on` names those that stop the run. README: Tracking and alarms."""

    truncation_threshold: float = Field(0.5, gt=0, le=1, description="truncation: warn when more than this share "
                                        "of completions hit train.max_completion_length without ending, at the "
                                        "first step or on average over `truncation_window` steps.")
    truncation_window: int = Field(10, ge=1, description="truncation: steps averaged.")
    no_signal_steps: int = Field(5, ge=1, description="no_signal: warn when every group's rewards tied (zero "
                                 "advantages, no learning) this many steps in a row.")
    grader_down_steps: int = Field(3, ge=1, description="grader_down: warn when a grader gave no score (masked or "
                                   "raised) on every completion this many steps in a row, e.g. a judge endpoint "
                                   "that is down.")
    stop_on: list[Literal["truncation", "no_signal", "grader_down", "overfitting"]] = Field(
        default_factory=list, description="Alarms that stop the run (after a checkpoint and a validation); "
        "overfitting is eval.overfit_patience's warning. `rft train` then exits with status 3 and summary.json "
        "says which alarm stopped it.")


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = Field("hf", description="Sampling backend: 'hf' (the built-in KV-cache sampler, "
                                         "CPU or GPU) or 'vllm' (GPU hosts; `pip install rftkit[vllm]`; the current "
                                         "LoRA adapter is saved and loaded into vLLM every step).")
    merge_lora: Literal["auto", "on", "off"] = Field("auto", description="hf only: sample from a copy of the model "
                                                     "with the current LoRA adapter merged into its weights (no "
                                                     "per-token adapter ops; ~1.6x faster decoding on the embedded "
                                                     "model) at the cost of one more copy of the adapted weights. "
                                                     "'auto': on for models up to 1 B parameters.")
    fast_decode: Literal["auto", "on", "off"] = Field(
        "auto", description="hf only, with the merged copy: run prefill and decode steps through rftkit's fused "
        "Qwen2/Llama layer (one matmul for q/k/v and one for gate/up, one RMSNorm op). 'auto': where the model is "
        "supported, else the model's own forward; 'on': refuse an unsupported model; 'off': always the model's "
        "own forward. true/false are read as auto/off.")

    @field_validator("fast_decode", mode="before")
    @classmethod
    def _fast_decode_bool(cls, value: Any) -> Any:
        return {True: "auto", False: "off"}.get(value, value) if isinstance(value, bool) else value
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vllm only: fraction of GPU memory vLLM may "
                                          "take (the training model shares the GPU).")
    max_model_len: int | None = Field(None, ge=1, description="vllm only: longest prompt + completion in tokens "
                                      "(null: the model's own limit).")


class DistributedConfig(Section):
    """Rollout and grading on Ray workers (`pip install rftkit[ray]`); without this section everything runs in
    the learner's process. README: Scaling out on Ray."""

    engine: Literal["ray"] = Field("ray", description="The engine that runs the rollout workers (Ray).")
    address: str | None = Field(None, description="null: start a local Ray runtime in this process (one CPU per "
                                "core of this machine); 'auto': join the cluster this machine belongs to (`ray "
                                "start --head` / `ray start --address ...` first); 'ray://HOST:10001': join a "
                                "remote cluster through Ray Client.")
    workers: int = Field(2, ge=1, description="Rollout workers. Each holds the base model and the adapter of a "
                         "known policy version, samples whole prompt groups and grades them; a step's prompts are "
                         "split between the workers.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs each worker reserves.")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs each worker reserves (on a GPU node set "
                                   "model.device: auto and, for vLLM, rollout.backend: vllm).")
    threads_per_worker: int = Field(1, ge=1, description="torch intra-op threads in each worker.")
    max_staleness: int = Field(0, ge=0, description="k: the batches of steps t+1..t+k are sampled while step t "
                               "updates, so a batch may come from a policy up to k optimizer steps old. 0: the "
                               "synchronous loop (the same metrics as the in-process run with one worker). Groups "
                               "older than k are dropped and resampled, and counted (pipeline/dropped_groups).")
    truncated_is: float | None = Field(None, gt=0, description="Truncated importance sampling cap C (Yao et al. "
                                       "2025): the clipped ratio is taken against the learner's own log-probs of "
                                       "the batch and each token's advantage is weighted by min(pi_learner / "
                                       "pi_behaviour, C), correcting sampler/learner mismatch and staleness. null: "
                                       "the ratio uses the behaviour log-probs the worker recorded.")
    rollout_timeout: float = Field(600.0, gt=0, description="Seconds one rollout request (sampling + grading a "
                                   "share of a step) may take; a worker or grader that hangs past it is reported, "
                                   "killed and restarted, and its prompts issued again.")
    start_timeout: float = Field(300.0, gt=0, description="Seconds to wait for a worker to start (placement and "
                                 "loading the model) before failing with what the cluster has free.")
    max_restarts: int = Field(3, ge=0, description="Worker restarts (after a death or a timeout) allowed per "
                              "run before the run stops with the cause.")


class EnvConfig(Section):
    """A multi-turn environment (README: Environments): the model's turns are answered by the environment's."""

    name: str | None = Field(None, description="Environment: 'countdown_feedback', 'arithmetic_tools', "
                             "'guess_number' or 'verifiers' (an environment written for the verifiers package; "
                             "`pip install rftkit[verifiers]`). null: one prompt, one completion (single-turn).")
    max_turns: int = Field(3, ge=1, description="Model turns per episode at most; the episode ends earlier when "
                           "the environment ends it.")
    max_episode_tokens: int = Field(160, ge=1, description="Token budget of an episode after its first prompt, "
                                    "model and environment tokens together (the model's context must hold prompt + "
                                    "budget); a model turn is cut where it runs out. train.max_completion_length "
                                    "caps each model turn.")
    options: dict[str, Any] = Field(default_factory=dict, description="The environment's own options "
                                    "(README: Environments lists them per environment).")

    @model_validator(mode="after")
    def _check_environment(self) -> "EnvConfig":
        if self.name is not None:
            from rftkit.envs import validate_env_config  # the registry lives with the environments

            validate_env_config(self)
        elif self.options:
            raise ValueError("env.options: given without env.name; name the environment or remove the options")
        return self


class DapoConfig(Section):
    """DAPO's own knobs (Yu et al. 2025); used only when algorithm: dapo."""

    epsilon_high: float = Field(0.28, gt=0, description="Upper clip bound of the ratio (clip-higher); the lower "
                                "bound is grpo.epsilon.")
    overlong_buffer: int = Field(4, ge=1, description="Soft overlong punishment: completions longer than "
                                 "train.max_completion_length - overlong_buffer tokens lose reward linearly, down to "
                                 "-overlong_penalty at the limit.")
    overlong_penalty: float = Field(1.0, ge=0, description="Reward lost at the length limit (0 turns the penalty off).")
    max_sampling_rounds: int = Field(3, ge=1, description="Dynamic sampling: rollout rounds per step to fill the batch "
                                     "with groups whose rewards differ; tied groups are dropped.")


class PpoConfig(Section):
    """PPO as in Tülu 3 RLVR; used only when algorithm: ppo (grpo.epsilon clips the policy ratio)."""

    gamma: float = Field(1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    kl_coef: float = Field(0.05, ge=0, description="Initial KL coefficient beta to the reference (adapter disabled).")
    kl_in: Literal["reward", "loss"] = Field("reward", description="'reward': -beta*log(pi/ref) per token in the "
                                             "reward (Tülu 3, Ziegler et al.); 'loss': beta * k3 KL in the loss.")
    adaptive_kl: bool = Field(False, description="Adapt kl_coef toward target_kl (Ziegler et al. 2019).")
    target_kl: float = Field(0.05, gt=0, description="Target KL per token for the adaptive controller.")
    kl_horizon: int = Field(10000, ge=1, description="Horizon (in completions) of the adaptive KL controller.")
    value_clip: float = Field(0.2, gt=0, description="Clip range of the value update around the old values.")
    vf_coef: float = Field(0.5, ge=0, description="Weight of the value loss.")
    value_learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the value head.")
    whiten_advantages: bool = Field(True, description="Normalise GAE advantages over the batch's tokens.")
    value_model: Literal["shared", "separate"] = Field(
        "shared", description="'shared': the value head reads the policy's own last hidden state (one forward, "
        "value and policy gradients meet in the trunk's adapter). 'separate': the critic is the same base weights "
        "under a second LoRA adapter of its own (the `lora:` settings, trained at value_learning_rate) plus the "
        "head, as Tülu 3 trains a separate value model: one more forward and backward per micro-batch, no shared "
        "gradients. Needs LoRA (not lora: null).")


class GspoConfig(Section):
    """GSPO's clip range on the sequence ratio (Zheng et al. 2025); used only when algorithm: gspo."""

    epsilon: float = Field(3e-4, gt=0, description="Lower clip of the length-normalised sequence ratio: 1 - epsilon "
                           "(the paper's 3e-4; sequence ratios sit much closer to 1 than token ratios).")
    epsilon_high: float = Field(4e-4, gt=0, description="Upper clip: 1 + epsilon_high (the paper's 4e-4).")


class CispoConfig(Section):
    """CISPO's bounds on the detached importance weight (MiniMax-M1); used only when algorithm: cispo."""

    epsilon_high: float = Field(0.28, gt=0, description="The weight is capped at 1 + epsilon_high (the paper tunes "
                                "only this bound).")
    epsilon_low: float | None = Field(None, gt=0, description="Lower bound 1 - epsilon_low of the weight; null: none "
                                      "(the paper's choice).")


class OnlineDpoConfig(Section):
    """Online DPO from verifier rewards (best vs worst of each group); used only when algorithm: online_dpo."""

    beta: float = Field(0.1, gt=0, description="DPO's beta: the implicit reward is beta * log(pi / ref), the "
                        "reference being the base (adapter disabled; a frozen copy when lora: null).")


class SftConfig(Section):
    """LoRA supervised fine-tuning on prompt -> completion pairs (loss on completion tokens only)."""

    completion_field: str = Field("solution", description="Example field holding the target completion "
                                  "(countdown: the expression that makes the target).")
    completion_format: str = Field("<answer>{completion}</answer>", description="Template of the completion text; "
                                   "{completion} is the field's value. The tokenizer's EOS token is appended.")
    steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Prompt/completion pairs per step (sampled with replacement).")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate for the LoRA parameters.")
    max_seconds: float | None = Field(None, gt=0, description="Stop early after this many seconds of training "
                                      "(validation not counted). null: run all `steps`.")
    eval_every: int = Field(100, ge=1, description="Validate every N steps (and at the start and the end).")


class RFTConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig | None = Field(
        default_factory=LoraConfig, description="The LoRA adapter that trains (the `lora.` keys below). null: "
        "full-weight fine-tuning: every parameter of the model trains, checkpoints are whole models in "
        "transformers' format, and an algorithm with a KL or DPO term keeps a frozen copy of the base as its "
        "reference (one more copy of the weights; AdamW adds two more, and the gradients one).")
    data: DataConfig = Field(default_factory=DataConfig)
    graders: list[GraderSpec] = Field(description="The reward: a list of named graders with weights.")
    accuracy_grader: str | None = Field(None, description="Grader whose score decides 'accurate' (score >= "
                                        "accuracy_threshold); null: the combined reward decides.")
    accuracy_threshold: float = Field(1.0, ge=0, le=1, description="Score counted as a correct answer.")
    algorithm: Literal["grpo", "dr_grpo", "dapo", "rloo", "ppo", "gspo", "cispo", "online_dpo"] = Field(
        "grpo", description="Policy-optimisation algorithm: grpo, dr_grpo, dapo, rloo, ppo, gspo, cispo or "
        "online_dpo (README: Algorithms). All share the `grpo:` section's num_generations and num_iterations.")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    dapo: DapoConfig = Field(default_factory=DapoConfig)
    ppo: PpoConfig = Field(default_factory=PpoConfig)
    gspo: GspoConfig = Field(default_factory=GspoConfig)
    cispo: CispoConfig = Field(default_factory=CispoConfig)
    online_dpo: OnlineDpoConfig = Field(default_factory=OnlineDpoConfig)
    sft: SftConfig = Field(default_factory=SftConfig, description="`rft sft`: supervised fine-tuning settings.")
    sft_warmup: SftConfig | None = Field(None, description="Run this SFT stage on the adapter before RFT starts.")
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    distributed: DistributedConfig | None = Field(None, description="Rollout and grading on Ray workers, "
                                                  "synchronous or asynchronous (the `distributed:` keys below). "
                                                  "null: everything in this process.")
    env: EnvConfig = Field(default_factory=EnvConfig)
    save_every: int = Field(100, ge=1, description="Write checkpoints/step-N every N steps (and at the end).")
    samples_per_step: int = Field(4, ge=0, description="Completions per step written to samples.jsonl.")
    store_completions: bool = Field(False, description="Also write every completion of every step, with its "
                                    "example's fields, reward and grades, to RUN_DIR/completions.jsonl, so that "
                                    "`rft regrade` can re-score the whole run (about 600 bytes per Countdown "
                                    "completion). false: regrade reads samples.jsonl (samples_per_step completions "
                                    "per step).")
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "trackio"]] = Field(
        default_factory=list, description="Trackers that receive every metrics record besides metrics.jsonl "
        "(TRL's names; each an extra: `pip install rftkit[tensorboard]`, ...). tensorboard writes RUN_DIR/"
        "tensorboard/; the rest follow the `tracking:` keys.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    output_dir: str = Field("runs/countdown", description="Run directory (config, metrics, samples, checkpoints). "
                            "Unset in a config file: runs/<the file's name without .yaml>.")

    @model_validator(mode="after")
    def _check_graders(self) -> "RFTConfig":
        from rftkit.graders import validate_grader_specs  # the registry lives with the graders

        if not self.graders:
            raise ValueError("graders: give at least one grader")
        validate_grader_specs(self.graders)
        names = [g.name for g in self.graders]
        if self.accuracy_grader is not None and self.accuracy_grader not in names:
            raise ValueError(f"accuracy_grader: {self.accuracy_grader!r} is not a grader name; have {names}")
        if sum(g.weight for g in self.graders) <= 0:
            raise ValueError("graders: at least one grader needs a positive weight")
        self._check_algorithm_keys()
        return self

    def _check_algorithm_keys(self) -> None:
        """A grpo key that the chosen algorithm fixes itself is an error, not a silent no-op."""
        fixed = {"dr_grpo": {"scale_rewards": "dr_grpo never divides by the group std",
                             "loss_aggregation": "dr_grpo uses a constant normaliser"},
                 "dapo": {"loss_aggregation": "dapo aggregates per token",
                          "epsilon_high": "set dapo.epsilon_high instead"},
                 "rloo": {"scale_rewards": "rloo uses the leave-one-out baseline"},
                 "ppo": {"scale_rewards": "ppo uses GAE", "loss_aggregation": "ppo aggregates per token",
                         "beta": "set ppo.kl_coef instead"},
                 "gspo": {"epsilon": "set gspo.epsilon instead (the sequence ratio's clip)",
                          "epsilon_high": "set gspo.epsilon_high instead",
                          "loss_aggregation": "gspo averages per sequence"},
                 "cispo": {"epsilon": "set cispo.epsilon_low instead (the weight's lower bound)",
                           "epsilon_high": "set cispo.epsilon_high instead",
                           "loss_aggregation": "cispo aggregates per token"},
                 "online_dpo": {"beta": "set online_dpo.beta instead (DPO's beta)",
                                "epsilon": "online_dpo has no ratio to clip", "epsilon_high": "no ratio to clip",
                                "scale_rewards": "online_dpo uses rewards only to pick pairs",
                                "loss_aggregation": "online_dpo averages over pairs"}}.get(self.algorithm, {})
        for key in sorted(set(fixed) & self.grpo.model_fields_set):
            raise ValueError(f"grpo.{key}: not used with algorithm {self.algorithm} ({fixed[key]}); remove the key")
        if self.algorithm == "dapo" and self.dapo.overlong_buffer > self.length_limit():
            limit = "env.max_episode_tokens" if self.env.name else "train.max_completion_length"
            raise ValueError(f"dapo.overlong_buffer: must be <= {limit} ({self.length_limit()})")
        if self.algorithm == "ppo" and self.ppo.value_model == "separate" and self.train.gradient_checkpointing:
            raise ValueError("ppo.value_model: 'separate' with train.gradient_checkpointing is not supported (the "
                             "backward would recompute the critic's layers under the policy's adapter); use shared")
        if self.lora is None:
            self._check_full_weight()

    def _check_full_weight(self) -> None:
        """lora: null trains every weight; what only makes sense with an adapter is refused by name."""
        why = {"ppo.value_model": ("separate", self.algorithm == "ppo" and self.ppo.value_model == "separate",
                                   "the separate critic is a second LoRA adapter; use shared"),
               "train.fused_forward": ("on", self.train.fused_forward == "on",
                                       "the fused kernels fuse W + s B A; full-weight runs use the model's own "
                                       "forward, use auto"),
               "rollout.merge_lora": ("on", self.rollout.merge_lora == "on", "there is no adapter to merge"),
               "rollout.fast_decode": ("on", self.rollout.fast_decode == "on",
                                       "fast decode runs on the merged copy of a LoRA policy; use auto"),
               "rollout.backend": ("vllm", self.rollout.backend == "vllm",
                                   "the vLLM backend loads the LoRA adapter each step; use hf"),
               "sft_warmup": ("set", self.sft_warmup is not None, "the SFT warm-up trains a LoRA adapter"),
               "distributed": ("set", self.distributed is not None,
                               "Ray workers receive the LoRA adapter's tensors; train in one process")}
        for key, (value, refused, reason) in why.items():
            if refused:
                raise ValueError(f"{key}: {value!r} is not supported with lora: null (full-weight) ({reason})")

    def length_limit(self) -> int:
        """Most tokens a rollout holds after its prompt: one completion, or an episode's budget."""
        return self.env.max_episode_tokens if self.env.name else self.train.max_completion_length


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")  # our validators' messages already name their key
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _allowed_keys_hint(err["loc"])
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")
    return "\n".join(lines)


def _allowed_keys_hint(loc: tuple) -> str:
    model: type[BaseModel] | None = RFTConfig
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        annotation = model.model_fields.get(str(part))
        model = getattr(annotation, "annotation", None) if annotation else None
        model = _section_of(model) or (model if isinstance(model, type) and issubclass(model, BaseModel) else None)
    if model is None:
        return ""
    return f"; allowed: {', '.join(sorted(model.model_fields))}"


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set a.b.c=value` (value parsed as YAML) to a raw config dict in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.steps=20")
    key, value_text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):  # a list entry by position: graders.0.weight=2
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {part!r} is not an index of {'.'.join(parts[:depth])} "
                                  f"(0 to {len(node) - 1})")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])!r} is not a section or a list")
        if last:
            node[part] = yaml.safe_load(value_text)
        else:
            if isinstance(node, dict):
                node.setdefault(part, {})
            node = node[part]


def parse_config(raw: Any, source: str = "config") -> RFTConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        return RFTConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RFTConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict):
        raw.setdefault("output_dir", str(Path("runs") / path.stem))
        _resolve_relative_paths(raw, path.parent)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return parse_config(raw, str(path))


def _resolve_relative_paths(raw: dict[str, Any], folder: Path) -> None:
    """Input files named relative to the config file's folder are found there (a path that exists
    relative to the working directory instead is kept as it is, as before)."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or value.startswith("hf:") or Path(value).is_absolute():
            return value
        file_part, sep, attr = value.partition(":") if value.split(":")[0].endswith(".py") else (value, "", "")
        if Path(file_part).exists() or not (folder / file_part).exists():
            return value
        return str(folder / file_part) + sep + attr

    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("source", "val_source"):
            if key in data:
                data[key] = resolve(data[key])
        screen = data.get("screen")
        if isinstance(screen, str) or isinstance(screen, dict) and "result" in screen:
            data["screen"] = resolve(screen) if isinstance(screen, str) else {**screen,
                                                                             "result": resolve(screen["result"])}
    for grader in raw.get("graders") or []:
        if isinstance(grader, dict) and "function" in grader:
            grader["function"] = resolve(grader["function"])


# Keys a resumed run may change: they decide how long to run and how often to log, not what is trained.
SAFE_ON_RESUME = frozenset({"train.steps", "train.max_seconds", "train.threads", "eval.eval_every", "eval.batch_size",
                            "eval.overfit_patience", "save_every", "samples_per_step",
                            "store_completions", "model.device", "output_dir",
                            "report_to", "tracking.project", "tracking.run_name", "tracking.mlflow_tracking_uri",
                            "tracking.wandb_mode", "alarms.truncation_threshold", "alarms.truncation_window",
                            "alarms.no_signal_steps", "alarms.grader_down_steps", "alarms.stop_on"})

# Where the rollout workers run, not what they compute: a run may resume on another cluster.
SAFE_ON_RESUME = SAFE_ON_RESUME | {"distributed.address", "distributed.workers", "distributed.cpus_per_worker",
                                   "distributed.gpus_per_worker", "distributed.threads_per_worker",
                                   "distributed.rollout_timeout", "distributed.start_timeout",
                                   "distributed.max_restarts"}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def changed_on_resume(saved: RFTConfig, new: RFTConfig) -> list[str]:
    """Keys whose value differs between a run's saved config and the one it is resumed with, outside
    SAFE_ON_RESUME (a different adapter rank or learning rate is another run, not a continuation)."""
    before, after = _flatten(saved.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and k not in SAFE_ON_RESUME)


def dump_config(config: RFTConfig, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    data = json.loads(config.model_dump_json())
    from rftkit.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def _section_of(annotation: Any) -> type[Section] | None:
    """The section X of an optional `X | None` annotation (such as `lora:`, which null switches off)."""
    sections = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, Section)]
    return sections[0] if len(sections) == 1 and type(None) in get_args(annotation) else None


def reference_markdown() -> str:
    """Every config key with its type, default and description, generated from the models above
    (the README embeds this output; a test keeps the two in sync)."""
    lines: list[str] = []
    plain = {info.annotation for info in RFTConfig.model_fields.values()}  # sections documented as their own key

    def walk(model: type[BaseModel], prefix: str) -> None:
        rows, sections = [], []
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                sections.append((f"{prefix}{name}", annotation))
                continue
            optional = _section_of(annotation)
            # on by default (null turns it off), or off by default with keys of its own (distributed:)
            if optional is not None and (info.default_factory is optional or optional not in plain):
                sections.append((f"{prefix}{name}", optional))
            default = "required" if info.is_required() else (
                "{}" if info.default_factory is dict or (optional and info.default_factory is optional)
                else json.dumps(info.get_default(call_default_factory=True), default=str))
            type_name = (annotation.__name__ if isinstance(annotation, type) else
                         str(annotation).replace("typing.", "")).replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | `{type_name}` | `{default}` | {info.description or ''} |")
        if rows:
            lines.extend([f"\n**{prefix.rstrip('.') or 'top level'}**\n", "| key | type | default | meaning |",
                          "|---|---|---|---|", *rows])
        for section_prefix, section in sections:
            walk(section, f"{section_prefix}.")

    walk(RFTConfig, "")
    return "\n".join(lines).strip() + "\n"
