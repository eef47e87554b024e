"""What a deployment serves: llama-server's `/v1/models` answer, read into `ModelInfo`.

Shared by the `list_models` tool, the resources and `gguf-mcp doctor` (which must not import
the MCP SDK), so it depends on pydantic only. The strings in it are the upstream's: they are
made plain here (no terminal escape, no control character, no line break), once, for the
text an agent reads and the structured result alike. The structured result does not keep the
raw value: JSON escapes C0 controls but writes C1 ones (U+009B, a one-character CSI) as they
are, so a client that prints it could still hand a terminal an escape; and a model id has no
use for a control character.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gguf_mcp.bodies import cut, plain
from gguf_mcp.config import Deployment
from gguf_mcp.errors import unexpected_shape

MAX_ID = 200
"""The most characters of a model id shown (llama-server's are a file name)."""


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
        raise unexpected_shape(dep.name, "a /v1/models response without a data list")
    models = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        meta = _shown(item["meta"]) if isinstance(item.get("meta"), dict) else None
        models.append(
            ModelInfo(
                id=cut(plain(item["id"]), MAX_ID),
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


def _shown(value: Any) -> Any:
    """An upstream JSON value with every string in it (keys included) made plain."""
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if isinstance(value, dict):
        return {plain(k): _shown(v) for k, v in value.items()}
    return value
