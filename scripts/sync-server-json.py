"""Rewrite server.json's version and environment variables from the package (run after changing OPTIONS)."""

import json
from pathlib import Path

from gguf_mcp import __version__
from gguf_mcp.config import OPTIONS

FORMATS = {"timeout": "number", "max_retries": "number", "port": "number", "deadline": "number"}
FILES = {"api_key_file", "auth_token_file", "config"}

path = Path(__file__).resolve().parents[1] / "server.json"
manifest = json.loads(path.read_text())
manifest["version"] = __version__
(package,) = manifest["packages"]
package["version"] = __version__
package["environmentVariables"] = [
    {
        "name": o.env,
        "description": o.help,
        "format": "filepath" if o.dest in FILES else FORMATS.get(o.dest, "string"),
        **({"isSecret": True} if o.secret else {}),
    }
    for o in OPTIONS
]
path.write_text(json.dumps(manifest, indent=2) + "\n")
