"""Advantages and losses as pure tensor functions, one module per algorithm family.

grpo.py (GRPO, Dr. GRPO's options, the shared clipped surrogate and aggregations), dapo.py,
rloo.py, ppo.py. `rftkit.algorithms.registry` wires them to the training loop through one registry.
"""
