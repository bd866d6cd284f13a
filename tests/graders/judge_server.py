"""A tiny OpenAI-compatible chat-completions server for tests and the judge example (loopback only).

It plays a deterministic judge: the reply's `result` is 10 x the share of the words after
"Reference answer:" that occur after "Model answer:" in the last user message. Behaviours for
failure tests are switched by the model name: "down-then-up:N" fails N requests with HTTP 503,
"garbage" replies with prose, "label" replies with a label, "unauthorized" answers 401.

    python tests/graders/judge_server.py --port 8765     # then: rft grade examples/judge.yaml ...
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def judge_reply(model: str, prompt: str) -> str:
    if model == "garbage":
        return "I would rather not say."
    reference = re.search(r"Reference answer:(.*?)(?:\n|$)", prompt)
    answer = re.search(r"Model answer:(.*?)(?:\nReply with|$)", prompt, re.DOTALL)
    ref_words = _words(reference.group(1)) if reference else set()
    got = _words(answer.group(1)) if answer else set()
    share = len(ref_words & got) / len(ref_words) if ref_words else 0.0
    if model == "label":
        return json.dumps({"result": "correct" if share == 1 else "incorrect"})
    return json.dumps({"result": round(10 * share, 2)})


class JudgeHandler(BaseHTTPRequestHandler):
    server: "JudgeServer"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append(body)
        model = body.get("model", "")
        if model == "unauthorized":
            return self._send(401, {"error": {"message": "invalid api key"}})
        if model.startswith("down-then-up:") and self.server.failures < int(model.split(":")[1]):
            self.server.failures += 1
            return self._send(503, {"error": {"message": "overloaded"}})
        prompt = body["messages"][-1]["content"]
        reply = judge_reply(model, prompt)
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


class JudgeServer(ThreadingHTTPServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), JudgeHandler)
        self.requests: list[dict] = []
        self.failures = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> "JudgeServer":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    print(f"stub judge on http://127.0.0.1:{port}/v1 (Ctrl-C to stop)")
    JudgeServer(port).serve_forever()
