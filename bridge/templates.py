"""``rerank-bridge templates install``: put the stored search templates into a cluster, idempotently."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException

from bridge.config import Settings
from bridge.engine_access import opensearch_client

# In a source checkout or an image built from one, the repository's own templates.
DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "search_templates"


def client_for(settings: Settings) -> OpenSearch:
    """The engine as the relay reaches it: same TLS (client certificate included), same credentials."""
    return opensearch_client(settings.upstream)


def load_templates(directory: Path) -> dict[str, dict[str, Any]]:
    """Every ``NAME.json`` under ``directory``, checked to be a stored mustache script."""
    templates = {}
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        script = body.get("script") if isinstance(body, dict) else None
        if not isinstance(script, dict) or script.get("lang") != "mustache" or "source" not in script:
            raise ValueError(f'{path}: expected {{"script": {{"lang": "mustache", "source": ...}}}}')
        templates[path.stem] = body
    if not templates:
        raise ValueError(f"{directory}: no *.json templates found")
    return templates


def install(client: OpenSearch, templates: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Create or update each template; leave identical ones alone. Returns name -> created/updated/unchanged."""
    results = {}
    for name, body in templates.items():
        try:
            current = client.get_script(id=name)
            same = current.get("script", {}).get("source") == _source_text(body["script"]["source"])
            state = "unchanged" if same else "updated"
        except NotFoundError:
            state = "created"
        if state != "unchanged":
            client.put_script(id=name, body=body)
        results[name] = state
    return results


def _source_text(source: Any) -> str:
    """The engine stores an object source as its JSON text; compare like with like."""
    return source if isinstance(source, str) else json.dumps(source, separators=(",", ":"))


def install_templates(settings: Settings, directory: Path | None) -> int:
    folder = directory or DEFAULT_DIRECTORY
    try:
        templates = load_templates(folder)
        results = install(client_for(settings), templates)
    except (ValueError, OSError) as error:
        print(f"rerank-bridge: {error}", file=sys.stderr)
        return 2
    except OpenSearchException as error:
        print(f"rerank-bridge: the engine refused: {error}", file=sys.stderr)
        return 1
    for name, state in results.items():
        print(f"{name}: {state}")
    return 0
