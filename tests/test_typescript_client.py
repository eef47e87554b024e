"""The official TypeScript SDK's 1.x client over stdio, calling `chat` with a progress callback
against llama.cpp's server: what the README says of it.

That client loses the last progress notification of some short calls, and the server cannot
prevent it (modelcontextprotocol/typescript-sdk#2580). gguf-mcp writes and flushes the final
notification before the result (the SDK's stdio writer sends one message at a time, in order).
When both arrive in one read, the client dispatches the result at once and the notification a
microtask later, after the result has retired the call's progress handler: "Received a progress
notification for an unknown token". Only a pause between the two writes, long enough for the
client to read in between, avoids it, and nothing can make it long enough on a busy machine
(measured: a 2 ms pause made it 0 of 20 on an idle machine, still 5 of 40 beside a busy core),
while every streamed call of every client would pay for it. So the result is what to trust:
complete every time, and the pieces a prefix of it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.bridge import ROOT, base_env
from tests.support.gateway import ACCOUNT_KEY, Gateway
from tests.support.node_tools import NodeTools

CLIENT = ROOT / "tests" / "support" / "ts_progress_client.mjs"
CALLS = 20


def test_the_typescript_client_gets_every_answer_whole_and_progress_that_is_a_prefix_of_it(
    gw: Gateway, node_tools: NodeTools
) -> None:
    sdk = node_tools.root / "node_modules" / "@modelcontextprotocol" / "sdk"
    request = {
        "command": sys.executable,
        "args": ["-m", "gguf_mcp"],
        "env": base_env() | {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY},
        "calls": CALLS,
        "arguments": {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8},
    }
    out = subprocess.run(
        [str(node_tools.node), str(CLIENT), str(sdk), json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["version"].startswith("1."), report["version"]  # the line with the bug, as the Inspector pins it
    results = report["results"]
    assert len(results) == CALLS and all(r["text"] for r in results)
    for result in results:
        joined = "".join(result["pieces"])
        assert result["text"].startswith(joined), result  # never a wrong piece: at worst the last one missing
    short = sum("".join(r["pieces"]) != r["text"] for r in results)
    unknown = [e for e in report["errors"] if "progress notification for an unknown token" in e]
    assert len(unknown) >= short and len(unknown) == len(report["errors"]), report["errors"]  # nothing else went wrong
    print(f"TypeScript SDK {report['version']}: the last progress piece was lost in {short} of {CALLS} calls")
