"""A verifiers 0.4 taskset as its users write one (nothing rftkit): sums, one answer, an exact-match reward.

Run as `env.options.taskset: tests/envs/vf1_tasksets/vf1_sums.py`; `vf-eval vf1_sums` would run the same file.
"""

import verifiers.v1 as vf

PAIRS = [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (1, 1), (3, 3), (5, 5), (7, 7)]


class SumData(vf.TaskData):
    answer: str


class SumTask(vf.Task[SumData]):
    @vf.reward(weight=1.0)
    async def exact(self, trace: vf.Trace) -> float:
        return 1.0 if trace.last_reply.strip() == self.data.answer else 0.0

    @vf.reward(weight=0.5)
    async def has_digits(self, trace: vf.Trace) -> float:
        """Partial credit (weighted 0.5): the share of the reply's characters that are digits."""
        text = trace.last_reply.strip()
        return sum(c.isdigit() for c in text) / len(text) if text else 0.0

    @vf.metric
    async def reply_chars(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply))


class SumConfig(vf.TasksetConfig):
    num_tasks: int = len(PAIRS)
    system_prompt_text: str | None = None


class SumTaskset(vf.Taskset[SumTask, SumConfig]):
    def load(self):
        for a, b in PAIRS[: self.config.num_tasks]:
            yield SumTask(SumData(prompt=f"What is {a} + {b}? Answer with the number only.", answer=str(a + b),
                                  system_prompt=self.config.system_prompt_text), self.config.task)


__all__ = ["SumTaskset"]
