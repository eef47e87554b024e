"""`gguf-mcp`: parse flags, validate settings once, set up stderr logging, pick the transport, serve.

Imports the MCP SDK only after the settings are valid, so `--help` and configuration errors
answer at once instead of after the SDK's one-second import.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS, Settings, load_settings
from gguf_mcp.errors import ConfigError, report_config_error, secret_flag_refused
from gguf_mcp.logs import configure_logging

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gguf-mcp",
        description="MCP server for GGUF Cloud (llama.cpp) deployments. Every option can also be "
        "set by the environment variable named in its help; the flag wins.",
        epilog="Secrets come from the environment or a file, never from a flag value (flags show in process "
        "listings): MODELSLAB_API_KEY or --api-key-file for the deployments' key, GGUF_MCP_AUTH_TOKEN or "
        "--auth-token-file for the token HTTP clients must send.",
    )
    for o in OPTIONS:
        if not o.flag:
            continue
        if o.switch:
            parser.add_argument(
                o.flag, dest=o.dest, action="store_const", const="true", help=f"{o.help} [env: {o.env}]"
            )
        else:
            parser.add_argument(o.flag, dest=o.dest, metavar=o.metavar, help=f"{o.help} [env: {o.env}]")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["doctor"],
        metavar="doctor",
        help="Instead of serving, check the settings and each deployment with real requests, print one line per "
        "check, and exit (0: all passed, 1: a check failed, 2: a configuration error).",
    )
    parser.add_argument("--version", action="version", version=f"gguf-mcp {__version__}")
    for flag, env, file_flag in (
        ("--api-key", "MODELSLAB_API_KEY", "--api-key-file"),
        ("--auth-token", "GGUF_MCP_AUTH_TOKEN", "--auth-token-file"),
    ):
        parser.add_argument(flag, nargs="?", action=_RefuseSecretFlag, help=argparse.SUPPRESS, env=env, file=file_flag)
    return parser


class _RefuseSecretFlag(argparse.Action):
    """A secret given as a flag is visible in process listings: refuse it without echoing it."""

    def __init__(self, *args: object, env: str, file: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._env, self._file = env, file

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        error = secret_flag_refused(self.option_strings[0], self._env, self._file)
        print(report_config_error(error), file=sys.stderr)
        parser.exit(EXIT_CONFIG)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(vars(args), os.environ)
        if args.command == "doctor":
            from gguf_mcp.doctor import run_doctor  # no MCP SDK import

            configure_logging(settings)
            with contextlib.suppress(KeyboardInterrupt):
                return run_doctor(settings)
            return 130
        configure_logging(settings)
        with contextlib.suppress(KeyboardInterrupt):
            _serve(settings)
        return 0
    except ConfigError as exc:
        print(report_config_error(exc), file=sys.stderr)
        return EXIT_CONFIG


def _serve(settings: Settings) -> None:
    import anyio

    from gguf_mcp.server import build_server
    from gguf_mcp.state import AppState
    from gguf_mcp.upstream import upstream_client

    http, upstream = upstream_client(settings)  # a proxy it cannot use is a configuration error, now

    async def serve() -> None:
        async with http:
            state = AppState(settings, upstream)
            if settings.transport == "http":
                from gguf_mcp.http import serve_http

                await serve_http(state)
            else:
                await build_server(state).run_stdio_async()

    anyio.run(serve)
