"""Proposed changes to gguf_mcp, measured before they are applied (see variant_server.py)."""
