#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU, AVX2 baseline, no web UI) from the llama.cpp tree vendored
# in the llama-cpp-python sdist on PyPI, so the test tier can run against the real binary without
# a network beyond PyPI. Prints the binary's path on stdout (everything else goes to stderr).
# Re-runs reuse the cached binary.
#
# Env: LCP_VER (llama-cpp-python sdist version), LLAMA_SERVER_CACHE (where the binary is kept),
#      JOBS (parallel compile jobs, default nproc), PYTHON (interpreter with pip, default python3).
# Usage: GGUF_MCP_TEST_LLAMA_SERVER=$(scripts/build-llama-server.sh) pytest
set -euo pipefail
LCP_VER=${LCP_VER:-0.3.36} # vendors ggml-org/llama.cpp@0c1e57098
CACHE=${LLAMA_SERVER_CACHE:-$HOME/.cache/llama-server/lcp-$LCP_VER}
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}
if [ -x "$CACHE/llama-server" ]; then
  echo "$CACHE/llama-server"
  exit 0
fi
for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "build-llama-server: '$tool' is required" >&2; exit 1; }
done
GEN=()
if command -v ninja >/dev/null; then
  GEN=(-G Ninja)
else
  command -v make >/dev/null || { echo "build-llama-server: need ninja or make" >&2; exit 1; }
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$W" "llama-cpp-python==$LCP_VER" >&2
SRC="llama_cpp_python-$LCP_VER/vendor/llama.cpp"
tar xzf "$W/llama_cpp_python-$LCP_VER.tar.gz" -C "$W" "$SRC"
# GGML_NATIVE=OFF: a -march=native binary dies with SIGILL on other CPUs of the same kind.
# LLAMA_*UI=OFF: the default build downloads the web UI from Hugging Face.
cmake -S "$W/$SRC" -B "$W/build" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
cmake --build "$W/build" --target llama-server -j"$JOBS" >&2
# Install via a temporary name so a concurrent or interrupted run never leaves a partial binary.
mkdir -p "$CACHE"
install -m 755 "$W/build/bin/llama-server" "$CACHE/llama-server.tmp.$$"
mv -f "$CACHE/llama-server.tmp.$$" "$CACHE/llama-server"
echo "$CACHE/llama-server"
