"""What a deployment serves: llama-server's `/v1/models` answer, read into `ModelInfo`.

Shared by the `list_models` tool, the resources and `gguf-mcp doctor` (which must not import
the MCP SDK), so it depends on pydantic only.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gguf_mcp.config import Deployment
from gguf_mcp.errors import InvalidResponse


class ModelInfo(BaseModel):
    id: str
    context_size: int | None = None
    parameters: int | None = None
    size_bytes: int | None = None
    meta: dict[str, Any] | None = None


def parse_models(dep: Deployment, data: Any) -> list[ModelInfo]:
    """The models listed in a `/v1/models` body; entries without a string id are skipped."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise InvalidResponse(f"Deployment {dep.name!r} sent a /v1/models response without a data list.")
    models = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else None
        models.append(
            ModelInfo(
                id=item["id"],
                context_size=_int(meta, "n_ctx") or _int(meta, "n_ctx_train"),
                parameters=_int(meta, "n_params"),
                size_bytes=_int(meta, "size"),
                meta=meta,
            )
        )
    return models


def _int(meta: dict[str, Any] | None, key: str) -> int | None:
    value = meta.get(key) if meta else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
