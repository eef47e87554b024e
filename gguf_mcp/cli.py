"""`gguf-mcp`: parse flags, validate settings once, set up stderr logging (`gguf_mcp.logs`), serve.

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
from gguf_mcp.config import OPTIONS, parse_settings
from gguf_mcp.errors import ConfigError, redact
from gguf_mcp.logs import configure_logging

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gguf-mcp",
        description="MCP server for GGUF Cloud (llama.cpp) deployments. Every option can also be "
        "set by the environment variable named in its help; the flag wins.",
        epilog="Secrets come from the environment or a file, never from a flag value (flags show in "
        "process listings): MODELSLAB_API_KEY or --api-key-file for the deployments' key, "
        "GGUF_MCP_AUTH_TOKEN or --auth-token-file for the token HTTP clients must send.",
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
    parser.add_argument("--api-key", nargs="?", action=_RefuseKeyFlag, help=argparse.SUPPRESS)
    parser.add_argument("--auth-token", nargs="?", action=_RefuseTokenFlag, help=argparse.SUPPRESS)
    return parser


class _RefuseKeyFlag(argparse.Action):
    """A key given as a flag is visible in process listings: refuse it without echoing it."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        print(
            "gguf-mcp: configuration error: --api-key is not accepted (flags show in process listings). "
            "Set MODELSLAB_API_KEY in the environment, or use --api-key-file PATH.",
            file=sys.stderr,
        )
        parser.exit(EXIT_CONFIG)


class _RefuseTokenFlag(argparse.Action):
    """Same for the HTTP clients' token."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        print(
            "gguf-mcp: configuration error: --auth-token is not accepted (flags show in process listings). "
            "Set GGUF_MCP_AUTH_TOKEN in the environment, or use --auth-token-file PATH.",
            file=sys.stderr,
        )
        parser.exit(EXIT_CONFIG)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = parse_settings(vars(args), os.environ)
    except ConfigError as exc:
        # The settings never got built, so redact anything in the environment that looks secret
        # (a key pasted into the wrong variable would otherwise be quoted back).
        suspects = [v for k, v in os.environ.items() if k.endswith(("_KEY", "_TOKEN", "_SECRET")) and len(v) >= 8]
        print(f"gguf-mcp: configuration error: {redact(str(exc), suspects)}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings)
    if args.command == "doctor":
        from gguf_mcp.doctor import run_doctor  # no MCP SDK import

        with contextlib.suppress(KeyboardInterrupt):
            return run_doctor(settings)
        return 130

    import anyio

    from gguf_mcp.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, settings)
    return 0
