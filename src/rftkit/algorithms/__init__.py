"""Advantages and losses as pure tensor functions, one module per algorithm family.

grpo.py (GRPO, Dr. GRPO's options, the shared clipped surrogate and aggregations), dapo.py,
rloo.py, ppo.py; losses.py holds the registered policy losses (`register_policy_loss`) and
registry.py the algorithms (`ALGORITHMS`: advantages, reward shaping and which loss), which the
training loop reads and nothing else.
"""
