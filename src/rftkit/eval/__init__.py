"""Held-out evaluation: validation during training and `rft eval` (validate.py)."""
