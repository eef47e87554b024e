"""gguf-mcp: an MCP server that puts GGUF Cloud (llama.cpp) deployments in an agent's hands."""

__version__ = "0.1.0"
