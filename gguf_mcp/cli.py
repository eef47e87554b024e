"""`gguf-mcp`: parse flags, validate settings once, set up stderr logging, pick the transport, serve.

Imports the MCP SDK only after the settings are valid, so `--help` and configuration errors
answer at once instead of after the SDK's one-second import. `gguf-mcp token ...` needs no
settings: it is dispatched before them, with a parser of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS, Settings, load_settings, new_client_token
from gguf_mcp.errors import ConfigError, report_config_error, secret_flag_refused
from gguf_mcp.logs import configure_logging

EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 141
"""What a shell reports for a program stopped by SIGPIPE (`gguf-mcp doctor | head -3`)."""


def build_parser() -> argparse.ArgumentParser:
    """Settings flags, then an optional command; each command takes the settings flags too, so they
    work before it and after it. A command is a subparser of `commands` and an entry of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="gguf-mcp",
        description="MCP server for GGUF Cloud (llama.cpp) deployments. Every option can also be "
        "set by the environment variable named in its help; the flag wins. Without a command, it serves MCP.",
        epilog="Secrets come from the environment or a file, never from a flag value (flags show in process "
        "listings): MODELSLAB_API_KEY or --api-key-file for the deployments' key, GGUF_MCP_AUTH_TOKEN or "
        "--auth-token-file for the token HTTP clients must send. `gguf-mcp token new NAME` prints a new token "
        "for a client named in GGUF_MCP_CONFIG, and the lines to paste there.",
    )
    add_settings(parser, default=None)
    parser.add_argument("--version", action="version", version=f"gguf-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    doctor = commands.add_parser(
        "doctor",
        help="Check the settings and each deployment with real requests, print one line per check, and exit "
        "(0: all passed, 1: a check failed, 2: a configuration error).",
    )
    add_settings(doctor, default=argparse.SUPPRESS)
    ask = commands.add_parser(
        "ask",
        help="Send one chat message to a deployment and print the answer as it arrives (0: answered, 1: the "
        "deployment failed, 2: a configuration error).",
    )
    ask.add_argument("prompt", help='the message, e.g. "Say hello"')
    ask.add_argument("--deployment", metavar="NAME", help="a deployment of GGUF_MCP_CONFIG (default: its default)")
    ask.add_argument("--max-tokens", type=_positive, metavar="N", help="most tokens to write (default: deployment's)")
    add_settings(ask, default=argparse.SUPPRESS)
    return parser


def add_settings(parser: argparse.ArgumentParser, *, default: object) -> None:
    """Every setting's flag, and the refusal of secret flags. Commands pass `argparse.SUPPRESS`, so a
    flag not given after the command leaves the one given before it alone."""
    for o in OPTIONS:
        if not o.flag:
            continue
        help = f"{o.help} [env: {o.env}]"
        if o.switch:
            parser.add_argument(o.flag, dest=o.dest, action="store_const", const="true", default=default, help=help)
        else:
            parser.add_argument(o.flag, dest=o.dest, metavar=o.metavar, default=default, help=help)
    for flag, env, file_flag in (
        ("--api-key", "MODELSLAB_API_KEY", "--api-key-file"),
        ("--auth-token", "GGUF_MCP_AUTH_TOKEN", "--auth-token-file"),
    ):
        parser.add_argument(flag, nargs="?", action=_RefuseSecretFlag, help=argparse.SUPPRESS, env=env, file=file_flag)


def _positive(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 2**31 - 1:  # llama-server reads an int32
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 2147483647, got {value!r}")
    return int(value)


class _RefuseSecretFlag(argparse.Action):
    """A secret given as a flag is visible in process listings: refuse it without echoing it."""

    def __init__(self, *args: object, env: str, file: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._env, self._file = env, file

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        error = secret_flag_refused(self.option_strings[0], self._env, self._file)
        print(report_config_error(error), file=sys.stderr)
        parser.exit(EXIT_CONFIG)


def build_token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gguf-mcp token", description="Tokens for named clients (GGUF_MCP_CONFIG).")
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser(
        "new", help="Print a new random token for client NAME, once, and the [clients.NAME] lines to paste."
    )
    new.add_argument("name", metavar="NAME", help="the client's name: letters, digits, '-', '_' or '.'")
    return parser


def token_command(argv: Sequence[str]) -> int:
    """`gguf-mcp token new NAME`: the token on stdout once; the server keeps only its SHA-256."""
    args = build_token_parser().parse_args(argv)
    try:
        token, lines = new_client_token(args.name)
    except ConfigError as exc:
        print(report_config_error(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(f"Token for client {args.name!r} (shown once, stored nowhere: give it to that client as its bearer token):")
    print(f"\n  {token}\n")
    print("Paste these lines into the GGUF_MCP_CONFIG file, then restart gguf-mcp or send it SIGHUP:\n")
    print(lines, end="")
    return 0


_STANDALONE = {"token": token_command}
"""Subcommands that need no settings, each with its own parser, dispatched on the first argument."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _STANDALONE:
        return _STANDALONE[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(vars(args), os.environ)
        configure_logging(settings)
        with contextlib.suppress(KeyboardInterrupt):
            return quiet_on_broken_pipe(COMMANDS.get(args.command, _serve), settings, args)
        return 130
    except ConfigError as exc:
        print(report_config_error(exc), file=sys.stderr)
        return EXIT_CONFIG


def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from gguf_mcp.doctor import run_doctor  # no MCP SDK import

    return run_doctor(settings)


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    from gguf_mcp.ask import run_ask  # no MCP SDK import

    return run_ask(settings, args.prompt, deployment=args.deployment, max_tokens=args.max_tokens)


def quiet_on_broken_pipe(
    command: Callable[[Settings, argparse.Namespace], int], settings: Settings, args: argparse.Namespace
) -> int:
    """Run `command`; when the reader of stdout goes away (`| head -3`), stop without a traceback."""
    try:
        return command(settings, args)
    except BaseException as exc:
        if not _broken_pipe(exc):
            raise
    # Python flushes stdout once more at exit, into the same closed pipe: send that to /dev/null.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def _broken_pipe(exc: BaseException) -> bool:
    """A BrokenPipeError, alone or as all a task group raised."""
    group = getattr(exc, "exceptions", None)  # BaseExceptionGroup (a backport on Python 3.10)
    if isinstance(group, tuple):
        return all(_broken_pipe(inner) for inner in group)
    return isinstance(exc, BrokenPipeError)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from gguf_mcp.server import build_server
    from gguf_mcp.state import open_state

    # A proxy it cannot use, an audit log it cannot append to: configuration errors, now.
    http, state = open_state(settings, metrics=settings.transport == "http")

    async def serve() -> None:
        async with http:
            if settings.transport == "http":
                from gguf_mcp.http import serve_http

                await serve_http(state)
            else:
                await build_server(state).run_stdio_async()

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a terminal user stops the server
            anyio.run(serve)
    finally:
        state.fairshare.close()
    return 0


COMMANDS: dict[str | None, Callable[[Settings, argparse.Namespace], int]] = {"doctor": _doctor, "ask": _ask}
"""What each command runs, once the settings are valid and logging is set up (no command: serve)."""
