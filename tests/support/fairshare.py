"""gguf-mcp as users run it for the fair-share tests: named clients over gateway deployments,
each caller's calls tagged so the gateway's log says whose prompt reached the deployment.

- `Team`: the clients' tokens (canaries), their `[clients.*]` tables, and the TOML around them;
- `fair_server(...)`: `gguf-mcp --transport http` with that file and an audit trail;
- `Held`: a gateway fault that holds requests until the test lets them through (slots kept busy
  on demand, which no real deployment does);
- `Waits`: a progress callback that notes the "waiting for a free slot" messages of many calls.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from gguf_mcp.clients import hash_token
from tests.support.bridge import ServerProcess, base_env, free_port, gguf_mcp_argv, serving
from tests.support.gateway import ACCOUNT_KEY, Exchange, Fault, Gateway

PROMPT_CANARY = "PROMPT-CANARY-7d41b9"
CHAT = "/v1/chat/completions"


@dataclass
class Team:
    """Named clients: `policies` maps each name to the lines of its `[clients.<name>]` table."""

    policies: Mapping[str, str]
    tokens: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = {name: f"tok-{name}-canary-{secrets.token_hex(12)}" for name in self.policies}

    def toml(self) -> str:
        return "".join(
            f'[clients.{name}]\ntoken_sha256 = "{hash_token(self.tokens[name])}"\n{lines}\n'
            for name, lines in self.policies.items()
        )


def deployment_toml(gw: Gateway, name: str = "dep", extra: str = "") -> str:
    return f'[deployments.{name}]\nbase_url = "{gw.base_url_for(name)}"\n{extra}\n'


@contextmanager
def fair_server(
    workdir: Path, config: str, settings: Mapping[str, str] | None = None, argv: list[str] | None = None
) -> Iterator[ServerProcess]:
    """gguf-mcp over HTTP with GGUF_MCP_CONFIG = `config`, its audit trail in `workdir`/audit.jsonl."""
    path = workdir / "gguf-mcp.toml"
    path.write_text(config)
    env = base_env() | {
        "GGUF_MCP_CONFIG": str(path),
        "MODELSLAB_API_KEY": ACCOUNT_KEY,
        "GGUF_MCP_AUDIT_LOG": str(workdir / "audit.jsonl"),
        **(settings or {}),
    }
    port = free_port()
    with serving(argv or gguf_mcp_argv(port), port, env, workdir / "stderr") as server:
        yield server


def audit_lines(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def chat_bodies(gw: Gateway, deployment: str = "dep") -> dict[str, dict[str, Any]]:
    """The chat requests that reached `deployment` by their tag (`prompt`), in arrival order."""
    bodies = [r.json for r in gw.requests_for(deployment) if r.path == CHAT and isinstance(r.json, dict)]
    return {body["messages"][0]["content"].split()[0]: body for body in bodies}


def chat_prompts(gw: Gateway, deployment: str = "dep") -> list[str]:
    """The tags of the chat requests that reached `deployment`, in arrival order."""
    return list(chat_bodies(gw, deployment))


def poll_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (in a thread) until `condition()`, for state only another process knows: no event to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s")
        time.sleep(0.02)


def prompt(tag: str) -> list[dict[str, str]]:
    """A chat's messages, tagged so the gateway's log says whose call it was."""
    return [{"role": "user", "content": f"{tag} {PROMPT_CANARY}"}]


def scrape(server: ServerProcess, token: str | None = None, accept: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if accept:
        headers["accept"] = accept
    return httpx.get(f"{server.root}/metrics", headers=headers, timeout=10)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels (prometheus_client's own parser)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@dataclass(frozen=True)
class Held(Fault):
    """The request waits at the gateway until `release` is set, then goes to the deployment."""

    release: threading.Event

    async def answer(self, exchange: Exchange) -> None:
        await anyio.to_thread.run_sync(self.release.wait)
        await exchange.pass_through()


class Waits:
    """Progress callbacks for many calls: each call's notifications, and an event once `count`
    calls have heard that they wait for a slot."""

    def __init__(self, count: int) -> None:
        self.heard: dict[str, list[tuple[float, str]]] = {}
        self.waiting: set[str] = set()
        self._count = count
        self.enough = anyio.Event()

    def callback(self, name: str) -> Any:
        self.heard[name] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            self.heard[name].append((progress, message or ""))
            if (message or "").startswith("waiting for a free slot"):
                self.waiting.add(name)
                if len(self.waiting) >= self._count:
                    self.enough.set()

        return on_progress
