"""The GPU check kit: one script, about 10 minutes on one GPU, that runs what the CPU suite cannot.

    python benchmarks/gpu_check.py                    # on a GPU host: every check, on cuda
    python benchmarks/gpu_check.py --device cpu --quick   # rehearsal of the same code path here

Checks, each recorded as passed / failed / skipped with its figures in benchmarks/results/gpu_check.json:
1. `rft train` of the embedded model on the device (bfloat16 by `model.dtype: auto` on CUDA): held-out
   accuracy before/after, the LoRA moved, every tensor of the run on the device, steps per second;
2. small random-initialised Qwen2 and Llama (attention and MLP biases on) trained for a few steps there;
3. fused against reference log-probs and the fast decode against the model's own forward, on the device,
   in float32 and bfloat16;
4. the vLLM backend for real (imported, or installed with pip when the host can reach a registry);
5. a GRPO step against TRL's GRPOTrainer on the same device (benchmarks/vs_trl.py --device).
A check that cannot run says why (skipped); nothing is reported that did not run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def check_embedded_training(device: str, quick: bool) -> dict:
    from rftkit.config import load_config
    from rftkit.train.loop import train

    steps = 20 if quick else 200
    overrides = [f"train.steps={steps}", f"model.device={device}", "data.val_size=200", f"eval.eval_every={steps}",
                 f"save_every={steps}"]
    config = load_config(ROOT / "examples/countdown.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = train(config, Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - started
    assert summary["device"].startswith(device.split(":")[0]), summary["device"]
    return {"steps": steps, "seconds": round(seconds, 1), "steps_per_s": round(steps / seconds, 2),
            "before": summary["before"], "after": summary["after"], "device": summary["device"],
            "dtype": config.model.dtype}


def _random_model(kind: str, directory: Path) -> Path:
    """A small random-initialised model with the embedded tokenizer (biases on where the architecture has them)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from rftkit.models.embedded import EMBEDDED_DIR

    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    common = dict(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=True, mlp_bias=True))
    path = directory / kind
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def check_random_models(device: str, quick: bool) -> dict:
    from rftkit.config import load_config
    from rftkit.train.loop import train

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("qwen2", "llama"):
            path = _random_model(kind, Path(tmp))
            config = load_config(ROOT / "examples/countdown.yaml", [
                f"model.name={path}", f"model.device={device}", "train.steps=3", "data.val_size=16",
                "eval.eval_every=3", "save_every=3", "eval.batch_size=16"])
            summary = train(config, Path(tmp) / f"run-{kind}", progress=False)
            results[kind] = {"steps": summary["steps"], "device": summary["device"]}
    return results


def check_kernels(device: str, quick: bool) -> dict:
    from rftkit.config import DataConfig, LoraConfig, ModelConfig
    from rftkit.models.forward import token_logprobs
    from rftkit.models.kernels.fast_decode import FastDecoder
    from rftkit.models.loading import attach_lora, load_base_model, load_tokenizer
    from rftkit.rollout import generate_rollouts
    from rftkit.rollout.merged import MergedCopy
    from rftkit.tasks import load_examples
    from rftkit.types import SamplingSettings

    results = {}
    examples, _ = load_examples(DataConfig(train_size=8, val_size=2))
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("embedded", str(_random_model("llama", Path(tmp)))):
            for dtype in ("float32", "bfloat16"):
                config = ModelConfig(name=name, device=device, dtype=dtype)
                tokenizer = load_tokenizer(config)
                policy = attach_lora(load_base_model(config), LoraConfig(r=8))
                with torch.no_grad():
                    for pname, param in policy.named_parameters():
                        if "lora_B" in pname:
                            param.normal_(0, 0.02)
                batch = generate_rollouts(policy, tokenizer, examples[:4], SamplingSettings(4, 24, 1.0),
                                          torch.Generator(device).manual_seed(0))
                args = (policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, 1.0)
                fused, _ = token_logprobs(*args, fused_forward="on")
                reference, _ = token_logprobs(*args, fused_forward="off")
                mask = batch.completion_mask.bool()
                merged = MergedCopy(policy, fast_decode=True)
                merged.refresh(policy)
                decoder = FastDecoder(merged.model)
                ids, attention = batch.prompt_ids[:4], batch.prompt_mask[:4]
                positions = (attention.cumsum(-1) - 1).clamp(min=0)
                with torch.no_grad():
                    own = merged.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, -1]
                from rftkit.rollout.sampler import _new_cache

                cache = _new_cache(merged.model, ids.shape[1] + 1)
                fast = decoder.prefill(ids, attention, positions, cache.layers, 1)
                results[f"{Path(name).name}/{dtype}"] = {
                    "fused_vs_reference_max_abs": float((fused - reference)[mask].abs().max()),
                    "sampled_vs_reference_max_abs": float((batch.old_logprobs - reference)[mask].abs().max()),
                    "fast_prefill_vs_model_max_abs": float((fast.float() - own.float()).abs().max()),
                    "device": str(batch.device)}
    return results


def check_vllm(device: str, quick: bool) -> dict:
    if not device.startswith("cuda"):
        return {"skipped": "vLLM needs a CUDA device"}
    try:
        importlib.import_module("vllm")
    except ImportError:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "vllm"], capture_output=True,
                              text=True, timeout=420)
        if done.returncode != 0:
            return {"skipped": "vLLM is not installed and `pip install vllm` failed: " + done.stderr[-400:]}
    from rftkit.config import load_config
    from rftkit.train.loop import train

    config = load_config(ROOT / "examples/countdown.yaml", [
        "rollout.backend=vllm", f"model.device={device}", "train.steps=5", "data.val_size=16", "eval.eval_every=5",
        "save_every=5", "eval.batch_size=16"])
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(config, Path(tmp) / "run", progress=False)
    return {"steps": summary["steps"], "after": summary["after"]}


def check_vs_trl(device: str, quick: bool) -> dict:
    try:
        importlib.import_module("trl")
    except ImportError:
        return {"skipped": "TRL is not installed (pip install -e '.[bench]')"}
    out = ROOT / "benchmarks/results/vs_trl_gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/vs_trl.py"), "--device", device, "--steps",
                           "5" if quick else "10", "--repeats", "1" if quick else "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=480, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(out.read_text())
    return {"speedup_per_step": result["speedup_per_step"], "rftkit_step_s": result["rftkit"]["step_s"],
            "trl_step_s": result["trl"]["step_s"], "table": done.stdout.strip().splitlines()[-5:]}


CHECKS = {"embedded_training": check_embedded_training, "random_models": check_random_models,
          "kernels": check_kernels, "vllm": check_vllm, "vs_trl": check_vs_trl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to rehearse")
    parser.add_argument("--quick", action="store_true", help="fewer steps (the rehearsal)")
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run these checks only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_check.json"))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: run with --device cpu to rehearse, or on a GPU host")
    report = {"device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "checks": {}}
    for name in args.only or CHECKS:
        started = time.perf_counter()
        try:
            result = CHECKS[name](args.device, args.quick)
            status = "skipped" if "skipped" in result else "passed"
        except Exception as exc:  # one failing check must not hide the others' results
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            status = "failed"
        result.update(status=status, seconds=round(time.perf_counter() - started, 1))
        report["checks"][name] = result
        print(f"{name:18s} {status:8s} {result['seconds']:7.1f} s  "
              f"{json.dumps({k: v for k, v in result.items() if k not in ('traceback', 'status', 'seconds')})[:300]}",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
