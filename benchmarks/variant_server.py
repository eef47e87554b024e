"""A server with proposed changes installed: `python benchmarks/variant_server.py V1[,V2] [--bare | gguf-mcp args]`.

Each V names a file of `benchmarks/proposals`, either
- a replacement for a gguf_mcp module (`REPLACEMENTS`: `upstream_aiohttp` is the whole proposed
  `gguf_mcp/upstream.py`, so `diff -u gguf_mcp/upstream.py benchmarks/proposals/upstream_aiohttp.py`
  is the change), installed under the module's name before anything imports it; or
- a patch module whose `apply()` replaces parts of gguf_mcp or the SDK in this process
  (`fast_stdio`, `tls_when_needed`).

So a proposal is measured end to end (and can be tested) without editing gguf_mcp/. `--bare` runs
`benchmarks/bare_server.py` (stdio) instead of gguf-mcp, for SDK-level experiments.
"""

from __future__ import annotations

import importlib
import importlib.util
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPLACEMENTS = {"upstream_aiohttp": "gguf_mcp.upstream"}


def install(variant: str) -> None:
    if variant in REPLACEMENTS:
        # Derived from the current gguf_mcp/upstream.py each time, never kept: a stale copy would
        # measure old code.
        from benchmarks.proposals import make_upstream_aiohttp

        if make_upstream_aiohttp.main() != 0:
            raise SystemExit(f"{variant}: the proposal no longer applies to gguf_mcp/upstream.py")
        name = REPLACEMENTS[variant]
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "proposals" / f"{variant}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(f"benchmarks.proposals.{variant}").apply()


if __name__ == "__main__":
    for variant in sys.argv.pop(1).split(","):
        install(variant)
    if sys.argv[1:2] == ["--bare"]:
        sys.argv = [str(ROOT / "benchmarks" / "bare_server.py")]
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        from gguf_mcp.cli import main

        sys.exit(main())
