"""Fused Llama-family kernels with the model's own forward as their reference and fallback:
one shared decoder layer (llama.py) that the training forward (fused_forward.py) and the
sampler's decode steps (fast_decode.py) both run."""
