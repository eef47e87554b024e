"""What the fair share (queue, client limits, metrics, audit trail) costs in server CPU per forwarded
token at C concurrent streams, against gguf-mcp as of a git ref without it, interleaved.

Each round runs `benchmarks.scale` once for each side, in turn (`--systems gguf-stateful --levels
C`, the emulated deployment and load generator of the scale sweep), the current side with
`GGUF_MCP_AUDIT_LOG` set to a file so every record is written as in production. A round's ratio
is its two server-CPU-per-token figures divided; the report is the median ratio over rounds with
its range, and the same ratio normalised by the emulator's and load generator's own CPU per token
(identical code on both sides: what they vary by is the machine's noise).

    .venv/bin/python -m benchmarks.fairshare_cost --ref d5d88f4 [--rounds 3] [--c 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT


def run_scale(c: int, json_path: Path, ref: str | None, audit: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.scale", "--systems", "gguf-stateful", "--levels", str(c)]
    argv += ["--json", str(json_path)]
    if ref is not None:
        argv += ["--ref", ref]
    if audit is not None:
        argv += ["--gguf-env", f"GGUF_MCP_AUDIT_LOG={audit}"]
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    (run,) = json.loads(json_path.read_text())["runs"]
    return dict(run)


def cpu_per_token(run: dict[str, Any], process: str) -> float:
    """A process's CPU over the run's forwarded tokens (all runs last the same window)."""
    return float(run["cores"][process]) / max(1, int(run["load"]["tokens"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, help="gguf-mcp without the fair share (e.g. the commit before it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--c", type=int, default=100)
    options = parser.parse_args()
    ratios: list[float] = []
    normalised: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(options.rounds):
            now = run_scale(options.c, Path(tmp) / "now.json", None, Path(tmp) / "audit.jsonl")
            before = run_scale(options.c, Path(tmp) / "before.json", options.ref, None)
            ratio = now["server_us_per_token"] / before["server_us_per_token"]
            noise = [cpu_per_token(now, p) / cpu_per_token(before, p) for p in ("emulator", "loadgen")]
            noise_ratio = statistics.mean(noise) if noise else 1.0
            ratios.append(ratio)
            normalised.append(ratio / noise_ratio)
            print(
                f"round {round_ + 1}: now {now['server_us_per_token']:.0f} µs/token, {options.ref} "
                f"{before['server_us_per_token']:.0f} -> {ratio:.3f}x (emulator+loadgen CPU {noise_ratio:.3f}x; "
                f"normalised {ratio / noise_ratio:.3f}x); holds {now['holds']}/{before['holds']}",
                flush=True,
            )
    print(
        f"C={options.c}, {options.rounds} rounds: server CPU per token {statistics.median(ratios):.3f}x "
        f"[{min(ratios):.3f}-{max(ratios):.3f}] of {options.ref}; normalised by the emulator and load generator "
        f"{statistics.median(normalised):.3f}x [{min(normalised):.3f}-{max(normalised):.3f}]"
    )


if __name__ == "__main__":
    main()
