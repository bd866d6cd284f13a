"""Training: the loop (loop.py), one step's data (collect.py), the update (update.py), checkpoints,
SFT, and process set-up (threads, seeds, devices, torchrun ranks: process.py, dist.py)."""
