"""Install paths people use, run from what they install, never from this source tree.

The wheel is built as a release would be (`pip wheel . --no-deps`); `pipx run` and `uvx` then
install it with its dependencies from the package index into empty caches, and the README's own
`python3 -m venv .venv && .venv/bin/pip install .` is followed to the letter. Every run gets a
desktop client's environment: a short PATH, no PYTHONPATH, the key only in the environment.
Timings are printed (`pytest -rP` shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.support.gateway import ACCOUNT_KEY, Gateway

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DESKTOP_PATH = "/usr/bin:/bin"  # what a desktop app gives the servers it spawns, not the user's shell PATH
USER = [{"role": "user", "content": "Hello there"}]
# How this machine's HTTPS reaches the package index (a CA bundle of its own); not gguf-mcp's business.
TLS = {k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if k in os.environ}
INSTALL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--wheel-dir", str(out), "--quiet"],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    (built,) = out.glob("gguf_mcp-*-py3-none-any.whl")
    print(f"wheel built in {time.monotonic() - started:.1f} s: {built.name}")
    return built


def deployment_env(gw: Gateway) -> dict[str, str]:
    return {"GGUF_BASE_URL": gw.base_url_for("dep-main"), "MODELSLAB_API_KEY": ACCOUNT_KEY}


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert ACCOUNT_KEY not in out.stdout + out.stderr
    return out, time.monotonic() - started


def test_the_wheel_holds_the_package_and_its_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"gguf_mcp"}  # no tests, benchmarks or scripts in what users install
    assert {"gguf_mcp/cli.py", "gguf_mcp/doctor.py", "gguf_mcp/upstream.py"} <= set(names)
    assert re.search(r"^gguf-mcp = gguf_mcp\.cli:main$", entry_points, re.MULTILINE)
    assert re.search(r"^Requires-Dist: mcp<3,>=2\.3$", metadata, re.MULTILINE)


def test_pipx_run_from_the_wheel_answers_help_and_doctor(wheel: Path, gw: Gateway, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "PATH": DESKTOP_PATH,
        "HOME": str(home),
        "PIPX_HOME": str(home / "pipx"),
        "PIPX_BIN_DIR": str(home / "bin"),
        "PIPX_MAN_DIR": str(home / "man"),
        # pip, not uv: pipx picks uv when it sees it (it is installed next to pipx here), but most
        # pipx installs have no uv; uvx is tested on its own below.
        "PIPX_DEFAULT_BACKEND": "pip",
        "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
    }
    help_out, cold = run([str(BIN / "pipx"), "run", "--spec", str(wheel), "gguf-mcp", "--help"], env, tmp_path)
    assert help_out.returncode == 0, help_out.stderr
    assert help_out.stdout.startswith("usage: gguf-mcp ")
    assert "doctor" in help_out.stdout
    doctor_out, warm = run(
        [str(BIN / "pipx"), "run", "--spec", str(wheel), "gguf-mcp", "doctor"], env | deployment_env(gw), tmp_path
    )
    assert doctor_out.returncode == 0, doctor_out.stdout + doctor_out.stderr
    assert "All 8 checks passed" in doctor_out.stdout
    installed = [p for p in (home / "pipx").rglob("site-packages/gguf_mcp/cli.py") if p.is_file()]
    assert len(installed) == 1  # the wheel's copy, in pipx's own venv
    assert not installed[0].resolve().is_relative_to(ROOT)
    print(f"pipx run (pip backend), empty cache, to --help: {cold:.1f} s; then doctor, cached: {warm:.1f} s")


@asynccontextmanager
async def stdio_session(command: str, args: list[str], env: dict[str, str], errlog: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(errlog.parent))
    with errlog.open("a") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=INSTALL_TIMEOUT_S) as client:
            yield client


@pytest.mark.anyio
async def test_uvx_from_the_wheel_serves_mcp_over_stdio(wheel: Path, gw: Gateway, tmp_path: Path) -> None:
    env = {
        "PATH": DESKTOP_PATH,
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        # The interpreter to build the tool's environment from; never download one (no network for it).
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
        **TLS,
        **deployment_env(gw),
    }
    errlog = tmp_path / "uvx.stderr"
    timings = []
    for _ in ("cold", "warm"):
        started = time.monotonic()
        try:
            async with stdio_session(str(BIN / "uvx"), ["--from", str(wheel), "gguf-mcp"], env, errlog) as client:
                initialized = time.monotonic() - started
                tools = {t.name for t in (await client.list_tools()).tools}
                result = await client.call_tool("chat", {"messages": USER, "max_tokens": 2})
                timings.append((initialized, time.monotonic() - started))
        except Exception as exc:
            raise AssertionError(f"uvx gguf-mcp failed; its stderr:\n{errlog.read_text()[-3000:]}") from exc
        assert {"list_models", "chat", "messages"} <= tools
        assert not result.is_error, result
        assert result.structured_content is not None
        assert result.structured_content["usage"]["completion_tokens"] == 2
        assert result.structured_content["model"] == "tiny-test-model"
    log = errlog.read_text()
    assert ACCOUNT_KEY not in log
    assert re.search(r"Installed \d+ packages", log)  # the first run installed from the index, once
    assert len(re.findall(r"Installed \d+ packages", log)) == 1
    (cold_init, cold_total), (warm_init, warm_total) = timings
    print(
        f"uvx --from wheel, empty cache: initialized in {cold_init:.1f} s, chat answered at {cold_total:.1f} s; "
        f"cached: initialized in {warm_init:.1f} s, chat answered at {warm_total:.1f} s"
    )


def test_the_readme_install_command_then_doctor(gw: Gateway, tmp_path: Path) -> None:
    """README, Install: `python3 -m venv .venv && .venv/bin/pip install .` in a checkout, then doctor."""
    checkout = tmp_path / "gguf-mcp"
    shutil.copytree(ROOT / "gguf_mcp", checkout / "gguf_mcp", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "server.json"):
        shutil.copy2(ROOT / name, checkout / name)
    python3 = shutil.which("python3") or sys.executable
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CACHE_DIR": str(tmp_path / "pip-cache")}
    install, took = run(["sh", "-c", f"{python3} -m venv .venv && .venv/bin/pip install --quiet ."], env, checkout)
    assert install.returncode == 0, install.stderr
    command = checkout / ".venv" / "bin" / "gguf-mcp"
    doctor_out, doctor_took = run([str(command), "doctor"], {"PATH": DESKTOP_PATH} | deployment_env(gw), tmp_path)
    assert doctor_out.returncode == 0, doctor_out.stdout + doctor_out.stderr
    assert "ok   default: chat completion answered" in doctor_out.stdout
    print(f"README install (venv + pip install ., empty pip cache): {took:.1f} s; doctor: {doctor_took:.1f} s")
