"""A verifiers 0.4 taskset with a tool (its ToolEnv): an MCP toolset the harness calls for the model."""

import verifiers.v1 as vf

PAIRS = [(17, 25), (30, 12), (8, 9), (40, 2)]


class CalcToolset(vf.Toolset[vf.ToolsetConfig]):
    TOOL_PREFIX = "calc"

    @vf.tool
    def add(self, a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)


class CalcData(vf.TaskData):
    answer: str


class CalcTaskConfig(vf.TaskConfig):
    tools: vf.ToolsetConfig = vf.ToolsetConfig()


class CalcTask(vf.Task[CalcData, vf.State, CalcTaskConfig]):
    @classmethod
    def toolsets(cls, config: CalcTaskConfig) -> list[vf.Toolset]:
        return [CalcToolset(config.tools)]

    @vf.reward(weight=1.0)
    async def correct(self, trace: vf.Trace) -> float:
        return 1.0 if trace.last_reply.strip() == self.data.answer else 0.0

    @vf.metric
    async def tool_calls(self, trace: vf.Trace) -> float:
        return float(len(trace.tool_messages))


class CalcConfig(vf.TasksetConfig):
    task: CalcTaskConfig = CalcTaskConfig()


class CalcTaskset(vf.Taskset[CalcTask, CalcConfig]):
    def load(self):
        for a, b in PAIRS:
            yield CalcTask(CalcData(prompt=f"What is {a} + {b}? Use the calculator.", answer=str(a + b)),
                           self.config.task)


__all__ = ["CalcTaskset"]

if __name__ == "__main__":  # the runtime launches the toolset's MCP server from this module
    CalcToolset.run()
