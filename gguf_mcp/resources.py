"""MCP resources: the configured deployments and the model each serves, for clients that browse.

`gguf://deployments` lists them all; `gguf://deployments/<name>` is one. Reading queries the
deployment's `/v1/models` live, through the same health check the tools use.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver.resources import FunctionResource, Resource

from gguf_mcp.health import ModelsResult, query_models
from gguf_mcp.state import AppState

JSON = "application/json"


def build_resources(state: AppState) -> list[Resource]:
    settings = state.settings

    def reader(names: list[str]) -> Callable[[], object]:
        async def read() -> str:
            targets = [settings.deployments[n] for n in names]
            found = await query_models(state.upstream, targets, settings.default_deployment)
            return ModelsResult(deployments=found).model_dump_json(indent=2, exclude_none=True)

        return read

    resources: list[Resource] = [
        FunctionResource(
            uri="gguf://deployments",
            name="deployments",
            description="Every configured deployment and the model it serves.",
            mime_type=JSON,
            fn=reader(list(settings.deployments)),
        )
    ]
    for name, dep in settings.deployments.items():
        default = " (default)" if name == settings.default_deployment else ""
        resources.append(
            FunctionResource(
                uri=f"gguf://deployments/{name}",
                name=f"deployment {name}",
                description=(dep.description or f"Deployment {name}") + default,
                mime_type=JSON,
                fn=reader([name]),
            )
        )
    return resources
