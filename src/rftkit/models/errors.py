"""Errors of model loading, importable without torch (the `rft` command reports them)."""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded or placed; the message names the config key."""
