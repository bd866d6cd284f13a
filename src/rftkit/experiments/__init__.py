"""Experiments that compare training recipes on the embedded model: `rft experiment NAME`."""
