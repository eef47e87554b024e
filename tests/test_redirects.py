"""A deployment that answers with a redirect never sends the key or the prompt anywhere else.

The deployment (a gateway) answers every request with a 3xx pointing at a second server on
another port; that server records whatever reaches it. Every tool, the resources and `doctor`
must get a clear error naming the target, and the second server must receive nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.bridge import Bridge, Transport, base_env
from tests.support.gateway import ACCOUNT_KEY, Fault, Gateway, running_gateway

USER = [{"role": "user", "content": "a prompt only the deployment may read"}]
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("list_models", {}),
    ("chat", {"messages": USER, "max_tokens": 2}),
    ("chat", {"messages": USER, "max_tokens": 2, "deadline": 30}),  # streamed
    ("messages", {"messages": USER, "max_tokens": 2}),
    ("complete", {"prompt": "a prompt", "max_tokens": 2}),
    ("embed", {"input": "a text"}),
]


@pytest.fixture
def elsewhere() -> Iterator[Gateway]:
    """The server the redirect points at: it must never hear from gguf-mcp."""
    with running_gateway() as other:
        other.add_canned_deployment("dep-x")
        yield other


@pytest.fixture
def redirecting(gateway: Gateway, elsewhere: Gateway) -> Gateway:
    gateway.add_canned_deployment("dep-main")
    gateway.inject("dep-main", Fault.redirect(307, elsewhere.base_url_for("dep-x") + "/v1/chat/completions"), 100)
    return gateway


def target(elsewhere: Gateway) -> str:
    return elsewhere.base_url_for("dep-x").split("/api/")[0]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_no_tool_follows_a_redirect(
    redirecting: Gateway, elsewhere: Gateway, tmp_path: Path, transport: Transport
) -> None:
    env = {"GGUF_BASE_URL": redirecting.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    bridge = Bridge(transport, tmp_path)
    async with bridge.connect(env) as client:
        for name, arguments in CALLS:
            result = await client.call_tool(name, arguments)
            text = result.content[0].text  # type: ignore[union-attr]
            assert result.is_error, (name, text)
            assert f"a redirect to {target(elsewhere)}" in text, (name, text)
            assert "base URL is probably wrong" in text
        await client.read_resource("gguf://deployments")
    assert elsewhere.requests == []
    assert len(redirecting.requests_for("dep-main")) == len(CALLS) + 1  # each sent once: never retried
    assert ACCOUNT_KEY not in bridge.seen_text()


def test_doctor_does_not_follow_a_redirect(redirecting: Gateway, elsewhere: Gateway) -> None:
    env = base_env() | {"GGUF_BASE_URL": redirecting.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY}
    out = subprocess.run(
        [sys.executable, "-m", "gguf_mcp", "doctor"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 1
    assert out.stdout.splitlines()[1].startswith("FAIL default: redirected: Deployment 'default'")
    assert f"a redirect to {target(elsewhere)}" in out.stdout
    assert elsewhere.requests == []
    assert ACCOUNT_KEY not in out.stdout + out.stderr


CAPITAL_KEY = "sk-Canary-Redirect-7F3A9C1E5B"
"""Capitals, so the key a URL parser lowercases is a second spelling to look for."""


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_redirect_to_a_host_naming_the_key_shows_the_key_nowhere(tmp_path: Path, transport: Transport) -> None:
    """`307 Location: http://<key>.evil.test/`: the error names the target, the key masked whatever its case."""
    with running_gateway(CAPITAL_KEY) as gateway:
        gateway.add_canned_deployment("dep")
        gateway.inject("dep", Fault.redirect(307, f"http://{CAPITAL_KEY}.evil.test/v1/chat/completions"), 100)
        env = {"GGUF_BASE_URL": gateway.base_url_for("dep"), "MODELSLAB_API_KEY": CAPITAL_KEY}
        bridge = Bridge(transport, tmp_path)
        async with bridge.connect(env) as client:
            for name, arguments in CALLS[:4]:
                result = await client.call_tool(name, arguments)
                text = result.content[0].text  # type: ignore[union-attr]
                target = text.partition("a redirect to ")[2][:60]
                assert result.is_error and target.startswith("http://[redacted].evil.test"), (name, target)
            resource = await client.read_resource("gguf://deployments")
    shown = json.dumps(resource.model_dump(mode="json")) + bridge.seen_text()
    assert "[redacted].evil.test" in shown
    assert CAPITAL_KEY.lower() not in shown.lower()
