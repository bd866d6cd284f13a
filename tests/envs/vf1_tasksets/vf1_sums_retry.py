"""A verifiers 0.4 multi-turn environment (its MultiTurnEnv): the Env relays feedback turns until the answer is
right, through the agent's interaction (`turn(...)`: 0.4's env_response)."""

import verifiers.v1 as vf

PAIRS = [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)]


class RetryData(vf.TaskData):
    answer: str


class RetryTask(vf.Task[RetryData]):
    @vf.reward(weight=1.0)
    async def solved(self, trace: vf.Trace) -> float:
        return 1.0 if trace.last_reply.strip() == self.data.answer else 0.0

    @vf.reward(weight=0.5)
    async def digits(self, trace: vf.Trace) -> float:
        """Partial credit (weighted 0.5): the share of the last reply's characters that are digits."""
        text = trace.last_reply.strip()
        return sum(c.isdigit() for c in text) / len(text) if text else 0.0

    @vf.metric
    async def turns_used(self, trace: vf.Trace) -> float:
        return float(trace.num_turns)


class RetryTaskset(vf.Taskset[RetryTask, vf.TasksetConfig]):
    def load(self):
        for a, b in PAIRS:
            yield RetryTask(RetryData(prompt=f"What is {a} + {b}? Answer with the number only.", answer=str(a + b)),
                            self.config.task)


class RetryEnvConfig(vf.EnvConfig):
    agent: vf.AgentConfig = vf.AgentConfig()
    max_tries: int = 3


class RetryEnv(vf.Env[RetryEnvConfig]):
    async def run(self, task, agents):
        async with agents.agent.interaction(task) as chat:
            segment = await chat.turn()
            for _ in range(self.config.max_tries - 1):
                if segment.terminated or segment.last_reply.strip() == task.data.answer:
                    break
                segment = await chat.turn(f"{segment.last_reply.strip()!r} is wrong. Try again.")


__all__ = ["RetryTaskset", "RetryEnv"]
