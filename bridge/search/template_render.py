"""Rendering search templates through the engine itself, so mustache behaves exactly as the engine's.

``_render/template`` reads the same ``search_template`` object as ``_search/template``: the client's own bytes go
to it, so a template the engine refuses gets the engine's refusal from that one call, never a second request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.search.engine import Engine, EngineReply
from bridge.search.json_codec import JSONRefused, parse_json

RENDER_PATH = "/_render/template"


async def render_template(
    engine: Engine, headers: Mapping[str, str], template: Mapping[str, Any], raw: bytes
) -> dict[str, Any] | EngineReply | None:
    """The search body ``template`` (whose bytes are ``raw``) produces; the engine's answer when it refused to
    render it; None when it rendered something the bridge cannot run as a search (the engine then judges the
    template itself). A timeout or an unreachable engine raises its engine-shaped 504/502: the deadline is
    spent, nothing is sent again."""
    reply = await engine.exchange("POST", RENDER_PATH, headers, raw)
    if reply.status != 200:
        return reply
    try:
        output = parse_json(reply.body).get("template_output")
    except (JSONRefused, AttributeError):
        return None
    if not isinstance(output, dict):
        return None
    # The search-level flags of the template request belong to the search it renders.
    for flag in ("explain", "profile"):
        if template.get(flag) is True:
            output[flag] = True
    return output
