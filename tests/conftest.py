"""Shared fixtures: the real llama.cpp server, the gateway emulator, the MCP client."""
