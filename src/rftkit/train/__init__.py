"""Training: the loop (loop.py), set-up (setup.py), one step's data (collect.py), the update (update.py),
checkpoints, SFT, and process set-up (threads, seeds, devices: process.py; torchrun ranks: dist.py).

`rftkit.train(...)` is also the Python API (rftkit.api.train): the package's name and the verb users
call are the same word, so the package module is made callable rather than renamed.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from rftkit.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
