"""`rftkit-chat`: verifiers 0.4's `null` harness, run in the host process instead of as a uv-script program.

A verifiers harness id (`env.options.config.agent.harness.id: rftkit-chat`), and what rftkit picks for a taskset
that ships no harness. It executes the *same source* as verifiers' `null` harness: the chat program verifiers
bundles from `verifiers.v1.harnesses.utils` (mcp, compaction, core: `CHAT_PROGRAM_SOURCE`), compiled once and run
per segment in a fresh namespace with the arguments `launch_chat_program` would pass on its command line. Model
calls still go through the interception server (`endpoint` + `secret`) and tool calls through the task's MCP
servers, so the trace, the tool results and the error messages for malformed calls are the null harness's own;
`Harness.launch` allows exactly this ("a harness may run its loop in-process instead of launching a program").

Why: the null harness starts a Python process per segment, and importing openai + mcp there costs about 2 CPU-s;
on a 2-core machine a training step of 64 three-turn episodes then spends ~190 s starting programs (rftkit's
benchmarks/verifiers_v1.py measures both). The chat loop runs no model-written code (no bash, edit or search
tools), so running it in-process gives the model nothing it did not have.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import traceback

from verifiers.v1.harnesses.null import NullHarness, NullHarnessConfig
from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM_SOURCE


class InProcessChatConfig(NullHarnessConfig):
    """The null harness's knobs (tool_timeout, disabled_tools, ...); `id` is `rftkit-chat`."""


@functools.lru_cache(maxsize=1)
def _program():
    return compile(CHAT_PROGRAM_SOURCE, "<verifiers null harness chat program>", "exec")


@functools.lru_cache(maxsize=1)
def _tls_context():
    """The program's TLS trust (certifi's bundle), loaded once: loading it per segment cost ~18 ms, a third of
    an in-process segment's CPU time."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class InProcessChatHarness(NullHarness):
    """The null harness's chat program, executed in this process (see the module docstring)."""

    async def setup(self, runtime) -> None:
        return None  # no uv script to prepare: the program's dependencies are verifiers' own

    async def launch(self, ctx, trace, runtime, endpoint, secret, mcp_urls, data, tool_interception_url=None):
        from verifiers.v1.runtimes import ProgramResult

        system_prompt, prompt = self.resolve_prompt(data)
        initial_file = ""
        if prompt is not None and not isinstance(prompt, str):
            from verifiers.v1.dialects.chat import message_to_wire

            handle, initial_file = tempfile.mkstemp(prefix="rftkit-chat-", suffix=".json")
            with os.fdopen(handle, "w") as out:  # the program reads and deletes it, as it does in a runtime
                json.dump([message_to_wire(message) for message in prompt], out)
        mcp_config = ({"mcpServers": {name: {"url": url, "timeout": self.config.tool_timeout}
                                      for name, url in mcp_urls.items()}} if mcp_urls else None)
        args = argparse.Namespace(
            base_url=endpoint, api_key=secret, model=ctx.model, system_prompt=system_prompt or "",
            prompt=prompt if isinstance(prompt, str) else "", initial_messages_file=initial_file,
            mcp_config=json.dumps(mcp_config) if mcp_config else "", tool_interception_url=tool_interception_url or "",
            bash=False, compaction=False, summarize_at_tokens=None, edit=False, search=False, serper_key="")
        namespace: dict = {"__name__": "rftkit_chat_program"}  # not "__main__": the entry point stays inert
        exec(_program(), namespace)
        namespace["parse_args"] = lambda: args
        clients = []
        make_client = namespace["AsyncOpenAI"]

        def tracked_client(*a, **kw):
            client = make_client(*a, **kw)
            clients.append(client)
            return client

        namespace["AsyncOpenAI"] = tracked_client
        make_http = namespace["DefaultAsyncHttpxClient"]
        namespace["DefaultAsyncHttpxClient"] = lambda *a, verify=None, **kw: make_http(*a, verify=_tls_context(), **kw)
        try:
            await namespace["main"]()
            return ProgramResult(0, "", "")
        except SystemExit as exc:  # the program's own exit codes (e.g. the model-transport error)
            code = exc.code if isinstance(exc.code, int) else 1
            return ProgramResult(code, "", traceback.format_exc() if code else "")
        except Exception:  # noqa: BLE001 - a crashing program is a failed run, as its exit status would be
            return ProgramResult(1, "", traceback.format_exc())
        finally:
            for client in clients:
                await client.close()
            if initial_file and os.path.exists(initial_file):
                os.unlink(initial_file)


__all__ = ["InProcessChatHarness"]
