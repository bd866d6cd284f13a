"""A verifiers 0.4 taskset whose reward raises: verifiers records the error and no reward."""

import verifiers.v1 as vf


class BrokenTask(vf.Task[vf.TaskData]):
    @vf.reward
    async def broken(self, trace: vf.Trace) -> float:
        return 1 / 0


class BrokenTaskset(vf.Taskset[BrokenTask, vf.TasksetConfig]):
    def load(self):
        for i in range(3):
            yield BrokenTask(vf.TaskData(prompt=f"Say {i}."), self.config.task)


__all__ = ["BrokenTaskset"]
