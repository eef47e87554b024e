"""`gguf-mcp`: parse flags, validate settings once, set up stderr logging, serve.

Imports the MCP SDK only after the settings are valid, so `--help` and configuration errors
answer at once instead of after the SDK's one-second import.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS, Settings, parse_settings
from gguf_mcp.errors import ConfigError, redact

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


class _RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with a secret value in it."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in self._secrets):
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} [traceback withheld: it contained a secret]"
        return True


def configure_logging(settings: Settings) -> None:
    """stderr only (stdout is the stdio transport's wire), quiet by default, secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter(settings.secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # httpx logs every request at INFO; only worth it when debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = parse_settings(vars(args), os.environ)
    except ConfigError as exc:
        print(f"gguf-mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings)

    import anyio

    from gguf_mcp.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, settings)
    return 0
