"""MCP resources: the configured deployments and the model each serves, for clients that browse.

`gguf://deployments` lists those the caller may use; `gguf://deployments/<name>` is one (the
caller's policy, `gguf_mcp.access`, hides and refuses the others). Reading queries the
deployment's `/v1/models` live, through the same health check the tools use.
"""

from __future__ import annotations

from collections.abc import Callable

from mcp.server.mcpserver.resources import FunctionResource, Resource

from gguf_mcp.access import DEPLOYMENTS_URI, current_caller, deployments_for
from gguf_mcp.config import Deployment
from gguf_mcp.health import ModelsResult, query_models
from gguf_mcp.state import AppState

JSON = "application/json"


def build_resources(state: AppState) -> list[Resource]:
    settings = state.settings

    def reader(deployments: Callable[[], list[Deployment]]) -> Callable[[], object]:
        async def read() -> str:
            found = await query_models(state.upstream, deployments(), settings.default_deployment)
            return ModelsResult(deployments=found).model_dump_json(indent=2, exclude_none=True)

        return read

    resources: list[Resource] = [
        FunctionResource(
            uri=DEPLOYMENTS_URI,
            name="deployments",
            description="Every deployment you may use and the model it serves.",
            mime_type=JSON,
            fn=reader(lambda: deployments_for(state, current_caller(state))),
        )
    ]
    for name, dep in settings.deployments.items():
        default = " (default)" if name == settings.default_deployment else ""
        resources.append(
            FunctionResource(
                uri=f"{DEPLOYMENTS_URI}/{name}",
                name=f"deployment {name}",
                description=(dep.description or f"Deployment {name}") + default,
                mime_type=JSON,
                fn=reader(_fixed([dep])),
            )
        )
    return resources


def _fixed(deployments: list[Deployment]) -> Callable[[], list[Deployment]]:
    return lambda: deployments
