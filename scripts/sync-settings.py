"""Write every settings listing from the one settings model (`gguf_mcp.config.Settings`).

- server.json: the package's version and its environment variables;
- README.md: the table between `<!-- settings:start -->` and `<!-- settings:end -->`.

`--check` changes nothing and exits 1 when either is out of date (the suite runs it).

    .venv/bin/python scripts/sync-settings.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def server_json(current: str) -> str:
    manifest = json.loads(current)
    manifest["version"] = __version__
    (package,) = manifest["packages"]
    package["version"] = __version__
    package["environmentVariables"] = [
        {
            "name": o.env,
            "description": o.help,
            "format": "filepath" if o.file else "number" if o.number else "boolean" if o.switch else "string",
            **({"isSecret": True} if o.secret else {}),
        }
        for o in OPTIONS
    ]
    return json.dumps(manifest, indent=2) + "\n"


def readme(current: str) -> str:
    rows = ["| variable | flag | meaning |", "|---|---|---|"]
    for o in OPTIONS:
        flag = f"`{o.flag}`" if o.flag else "(none: a secret)"
        rows.append(f"| `{o.env}` | {flag} | {o.help.replace('|', '/')} |")
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n" + "\n".join(rows) + f"\n{END}{tail}"


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, render in (("server.json", server_json), ("README.md", readme)):
        path = ROOT / name
        current = path.read_text()
        wanted = render(current)
        if wanted != current:
            stale.append(name)
            if not check:
                path.write_text(wanted)
    if check and stale:
        print(f"out of date: {', '.join(stale)}; run scripts/sync-settings.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
