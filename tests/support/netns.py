"""A network namespace of the test's own, for traffic to an address that is not loopback.

Tests may only send traffic to loopback or inside a namespace they create. `in_namespace(argv)`
runs `argv` in a fresh network namespace (`unshare --net`, root or user namespaces needed) whose
interfaces carry `ADDRESS`, a TEST-NET-1 address: on a dummy interface when the kernel has the
module, else on the namespace's own `lo` (still not a loopback address, which is what the server
checks). Nothing in it reaches the machine's network, nor the machine's loopback.

`python -m tests.support.netns [UVICORN FLAGS]` is the probe run inside: a gateway, a tokenless
gguf-mcp under uvicorn's CLI bound to ADDRESS (with those extra flags, e.g. `--root-path /x`), an
MCP request that claims a loopback Host and a /healthz; it prints what they got as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.support.bridge import INITIALIZE, MCP_HEADERS, http_server, uvicorn_workers_argv
from tests.support.gateway import running_gateway

ADDRESS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): documentation only, never routed
_SETUP = (
    "ip link set lo up && "
    f"{{ {{ ip link add gguf0 type dummy && ip addr add {ADDRESS}/24 dev gguf0 && ip link set gguf0 up; }} "
    f"2>/dev/null || ip addr add {ADDRESS}/32 dev lo; }}"
)


def in_namespace(argv: list[str]) -> list[str]:
    """`argv` run in a new network namespace that carries ADDRESS."""
    return ["unshare", "--net", "--", "sh", "-c", f'{_SETUP} && exec "$@"', "sh", *argv]


def unavailable() -> str | None:
    """Why no namespace can be made here (a reason for pytest.skip), or None when one can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2) to make a network namespace"
    probe = subprocess.run(
        in_namespace(["ip", "-o", "addr", "show"]), capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0 or ADDRESS not in probe.stdout:
        return f"cannot make a network namespace here (root or user namespaces needed): {probe.stderr.strip()[:200]}"
    return None


def _probe(uvicorn_flags: list[str]) -> None:
    with running_gateway() as gateway, tempfile.TemporaryDirectory() as workdir:

        def launcher(port: int) -> list[str]:
            return uvicorn_workers_argv(port, 1, "--host", ADDRESS, *uvicorn_flags)

        with http_server(gateway, Path(workdir), launcher=launcher, host=ADDRESS) as server:
            # A non-browser client can claim any Host; the address the connection reached cannot lie.
            spoofed = httpx.post(
                server.url, json=INITIALIZE, headers=MCP_HEADERS | {"host": f"127.0.0.1:{server.port}"}, timeout=10
            )
            health = httpx.get(f"{server.root}/healthz", timeout=10)
        report = {
            "server": server.root,
            "spoofed": [spoofed.status_code, spoofed.text],
            "health": health.status_code,
            "stderr": server.stderr(),
            "upstream_requests": len(gateway.requests),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    _probe(sys.argv[1:])
    sys.exit(0)
