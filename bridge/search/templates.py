"""Rendering search templates through the engine itself, so mustache behaves exactly as the engine's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import BridgeHTTPError
from bridge.server.upstream import Upstream

_RENDER_KEYS = ("id", "source", "params")


async def render_template(
    upstream: Upstream, headers: Mapping[str, str], template: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The search body a template produces, or None when the engine cannot render it (it then answers itself)."""
    request = {key: template[key] for key in _RENDER_KEYS if key in template}
    if "id" not in request and "source" not in request:
        return None
    try:
        status, _, payload = await upstream.fetch_json(
            "POST", "/_render/template", headers, json.dumps(request).encode()
        )
    except BridgeHTTPError:
        return None
    if status != 200:
        return None
    try:
        output = json.loads(payload).get("template_output")
    except (ValueError, AttributeError):
        return None
    if not isinstance(output, dict):
        return None
    for flag in ("explain", "profile"):
        if template.get(flag) is True:
            output[flag] = True
    return output
