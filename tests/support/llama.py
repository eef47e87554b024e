"""llama.cpp's server as the test upstream: start it, wait for it, stop it, and pytest fixtures.

GGUF Cloud is llama.cpp's ``llama-server`` behind a gateway, so the test tier runs the bridge
against llama.cpp's real HTTP server code with the tiny model from ``tests.support.tiny_model``.

Two kinds of server, same routes, auth and JSON:

* ``"xllamacpp"`` (default): llama.cpp's server code in-process in a Python subprocess
  (``tests/support/xl_serve.py``, from the pinned ``xllamacpp`` wheel). No build needed.
* ``"binary"``: the real ``llama-server`` executable named by ``$GGUF_MCP_TEST_LLAMA_SERVER``
  (``scripts/build-llama-server.sh`` builds and caches one). Full fidelity, opt-in.

Known difference: invalid JSON bodies get 400 from xllamacpp but 500 from the binary.

Both run in a child process with its output in a log file, the API key passed through the
environment (never argv), an OS-assigned loopback port, and a guaranteed stop (SIGTERM, then
SIGKILL; on Linux the child is also killed if the test process dies).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import pytest

from tests.support.proc import stop
from tests.support.tiny_model import write_tiny_model

LLAMA_KEY = "llama-test-key-7c1e9a53"
"""API key of the session servers; distinctive so tests can check it never leaks."""
MODEL_ALIAS = "tiny-test-model"
"""Model id the servers report (the alias, so it is the same for both kinds)."""
LLAMA_SERVER_ENV = "GGUF_MCP_TEST_LLAMA_SERVER"
"""Environment variable naming a ``llama-server`` executable to use instead of xllamacpp."""
STARTUP_TIMEOUT_S = 60.0
"""Bound on start-up; the tiny model is healthy in well under a second on an idle machine."""
STOP_TIMEOUT_S = 10.0
"""How long SIGTERM gets before SIGKILL; both kinds normally exit in about 0.05 s."""

ServerKind = Literal["xllamacpp", "binary"]

# Both kinds read the key from here; passing it in argv would show it in `ps`.
_API_KEY_ENV = "LLAMA_API_KEY"
_XL_SERVE = Path(__file__).with_name("xl_serve.py")
# Both kinds log "... listening on http://127.0.0.1:PORT" once the port is open (which is how
# we learn the port --port 0 picked); the xllamacpp shim also prints "LISTENING <url>".
_LISTENING = re.compile(rb"(?:listening on|LISTENING) (http://[\w.\[\]:-]+)")
_POLL_INTERVAL_S = 0.02
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class LlamaServerError(RuntimeError):
    """The test llama.cpp server could not be found, failed to start, or died during tests."""


@dataclass(frozen=True)
class LlamaServer:
    """A running llama.cpp server, as the tests see it."""

    url: str
    """Root URL without a trailing slash, e.g. ``http://127.0.0.1:41543``."""
    api_key: str
    model_id: str
    n_ctx: int
    """Context size in tokens as ``/v1/models`` reports it (2048 for the tiny model)."""
    kind: ServerKind
    log_path: Path
    """Where the server's stdout and stderr go."""

    @property
    def v1_url(self) -> str:
        """Base URL for the OpenAI-compatible routes."""
        return f"{self.url}/v1"

    @property
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate with the server's key (none for a keyless server)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def slots(self) -> list[dict[str, Any]]:
        """Return the server's slots (``GET /slots``), one dict per parallel request slot."""
        response = httpx.get(f"{self.url}/slots", headers=self.auth_headers, timeout=10.0)
        response.raise_for_status()
        slots = response.json()
        if not isinstance(slots, list):
            raise LlamaServerError(f"GET /slots returned {slots!r}, expected a list")
        return cast("list[dict[str, Any]]", slots)

    def metrics_text(self) -> str:
        """Return the Prometheus text from ``GET /metrics`` (the servers run with metrics on)."""
        response = httpx.get(f"{self.url}/metrics", headers=self.auth_headers, timeout=10.0)
        response.raise_for_status()
        return response.text

    def is_idle(self) -> bool:
        """Whether no slot is processing a request, e.g. after a client cancelled a stream."""
        return not any(slot.get("is_processing") for slot in self.slots())

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """Poll until the server is idle; return False if it is still busy after ``timeout`` s.

        Generation stops only when llama.cpp notices the dropped connection, so tests of
        cancellation need to wait for it rather than check once.
        """
        deadline = time.monotonic() + timeout
        while not self.is_idle():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL_S)
        return True


@contextmanager
def running_llama_server(
    model_path: Path,
    api_key: str,
    *,
    embeddings: bool = True,
    alias: str = MODEL_ALIAS,
    log_path: Path | None = None,
    n_predict: int | None = None,
) -> Iterator[LlamaServer]:
    """Start llama.cpp's server on a free loopback port, yield it once healthy, then stop it.

    The server has ``api_key`` (``""``: none, so any request is accepted; for benchmarks against
    clients that send no key), 4 parallel slots, metrics, no prompt cache (so usage counts are
    the same on every request) and, with ``embeddings``, ``/v1/embeddings`` with mean pooling.
    ``n_predict`` caps the tokens of a request that names no limit (default: the whole context,
    about 20 s of generation for the tiny model).
    The kind is ``"binary"`` if ``$GGUF_MCP_TEST_LLAMA_SERVER`` is set, else ``"xllamacpp"``.
    Output overwrites ``log_path`` (default: a temporary file, deleted after a clean exit).
    Raises :class:`LlamaServerError` with the log's tail if the server does not become healthy
    within :data:`STARTUP_TIMEOUT_S`, or if it died while in use.

    Must be entered from a thread that outlives the server: on Linux the child is killed when
    the thread that started it exits, so a crashed test run cannot leave it behind.
    """
    kind, argv = _server_command(model_path, alias=alias, embeddings=embeddings)
    if n_predict is not None:
        argv += ["--n-predict", str(n_predict)]
    owns_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    # Settings come from argv only: LLAMA_ARG_* variables would silently override them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    env.pop(_API_KEY_ENV, None)
    if api_key:
        env[_API_KEY_ENV] = api_key
    # Truncate: a stale "listening on" line from an earlier run would send us to a dead port.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C goes to pytest, which then stops us in order
            preexec_fn=_die_with_parent(),  # fork-safe: see its docstring
        )
    try:
        url = _wait_until_healthy(process, log_path)
        model_id, n_ctx = _model_info(url, api_key, log_path)
        yield LlamaServer(url, api_key, model_id, n_ctx, kind, log_path)
        if process.poll() is not None:
            raise LlamaServerError(
                f"{kind} llama.cpp server exited with code {process.returncode} while in use" + _log_tail(log_path)
            )
    finally:
        stop(process, STOP_TIMEOUT_S)
    if owns_log:
        log_path.unlink(missing_ok=True)


def _server_command(model_path: Path, *, alias: str, embeddings: bool) -> tuple[ServerKind, list[str]]:
    """Pick the server kind from the environment and build its argv (the key is not in it)."""
    flags = [
        "-m", str(model_path), "--host", "127.0.0.1", "--port", "0", "--alias", alias,
        "--no-cache-prompt", "--parallel", "4", "--metrics",
        # One thread that sleeps when idle: a test machine has 2 cores, and a server spinning on
        # both starves the bridge and the client, so timing-sensitive tests would measure that.
        "--threads", "1", "--threads-batch", "1", "--poll", "0",
    ]  # fmt: skip
    binary = os.environ.get(LLAMA_SERVER_ENV)
    if not binary:
        extra = ["--embeddings"] if embeddings else []  # the shim also sets mean pooling
        return "xllamacpp", [sys.executable, str(_XL_SERVE), *flags, *extra]
    executable = shutil.which(binary)
    if executable is None:
        raise LlamaServerError(
            f"${LLAMA_SERVER_ENV} is {binary!r}, which is not an executable; build one with "
            "scripts/build-llama-server.sh or unset the variable to use xllamacpp"
        )
    # --kv-unified: with an explicit --parallel, the binary would otherwise split the context
    # into n_ctx / 4 per slot; unified matches its own default and the xllamacpp shim.
    extra = ["--embeddings", "--pooling", "mean"] if embeddings else []
    return "binary", [executable, *flags, "--kv-unified", *extra]


def _die_with_parent() -> Callable[[], None] | None:
    """Return a pre-exec hook that makes Linux SIGKILL the child when its parent dies.

    Without it, a test run killed by a timeout or SIGKILL leaves the server running. The
    hook runs between fork and exec, where taking a lock another thread holds would hang,
    so everything that might lock (loading libc, finding ``prctl``) happens here, before the
    fork; the child only makes the call.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None).prctl
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _wait_until_healthy(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """Return the server's root URL once the log names it and ``/health`` says ok."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url: str | None = None
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise LlamaServerError(
                    f"llama.cpp server exited with code {process.returncode} during start-up" + _log_tail(log_path)
                )
            if url is None:
                match = _LISTENING.search(log_path.read_bytes())
                url = match.group(1).decode() if match else None
            if url is not None and _is_healthy(client, url):
                return url
            if time.monotonic() >= deadline:
                raise LlamaServerError(
                    f"llama.cpp server not healthy after {STARTUP_TIMEOUT_S:.0f} s "
                    f"(listening on: {url or 'not yet'})" + _log_tail(log_path)
                )
            time.sleep(_POLL_INTERVAL_S)


def _is_healthy(client: httpx.Client, url: str) -> bool:
    """One ``/health`` probe; connection errors just mean "not yet"."""
    try:
        response = client.get(f"{url}/health")
    except httpx.TransportError:
        return False
    try:
        return response.status_code == 200 and response.json().get("status") == "ok"
    except ValueError:  # not JSON: some other process answered on this port
        return False


def _model_info(url: str, api_key: str, log_path: Path) -> tuple[str, int]:
    """Read the model id and per-slot context size the server reports."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{url}/v1/models", headers=headers, timeout=10.0)
    try:
        response.raise_for_status()
        model = response.json()["data"][0]
        return str(model["id"]), int(model["meta"]["n_ctx"])
    except (httpx.HTTPStatusError, LookupError, TypeError, ValueError) as error:
        raise LlamaServerError(
            f"unexpected GET /v1/models answer {response.status_code}: {response.text[:500]}" + _log_tail(log_path)
        ) from error


def _log_tail(log_path: Path) -> str:
    """The end of the server's log, for error messages."""
    try:
        lines = log_path.read_bytes().decode(errors="replace").splitlines()
    except OSError as error:
        return f"\n(could not read server log {log_path}: {error})"
    tail = "\n".join(lines[-_LOG_TAIL_LINES:])
    return f"\n--- last {_LOG_TAIL_LINES} lines of {log_path} ---\n{tail}"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF with the plain ChatML template (tools are not rendered)."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_tool_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF with the Hermes/Qwen tool-aware template (tools reach the prompt)."""
    path = tmp_path_factory.mktemp("tiny-tool-model") / "tiny-tools.gguf"
    return write_tiny_model(path, tool_template=True)


@pytest.fixture(scope="session")
def llama_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama.cpp server for the whole run, key :data:`LLAMA_KEY`, ChatML model."""
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running_llama_server(tiny_model_path, LLAMA_KEY, log_path=log_path) as server:
        yield server


@pytest.fixture(scope="session")
def llama_tool_server(tiny_tool_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """Like ``llama_server``, but the model's template renders ``tools`` into the prompt."""
    log_path = tmp_path_factory.mktemp("llama-tool-server") / "server.log"
    with running_llama_server(tiny_tool_model_path, LLAMA_KEY, log_path=log_path) as server:
        yield server
