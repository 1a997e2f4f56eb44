"""``rerank-bridge``: serve, check the config, install search templates, evaluate relevance."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import HttpUrl, ValidationError

from bridge.config import ConfigError, Settings, load_settings, masked


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML file; BRIDGE_* variables override it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge in front of the engine")
    _config_argument(serve)
    serve.add_argument("--host", default=None, help="overrides server.host")
    serve.add_argument("--port", type=int, default=None, help="overrides server.port")
    serve.add_argument("--upstream", default=None, help="overrides upstream.url")

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate and print the effective config, secrets masked"
    )
    _config_argument(check)

    templates = commands.add_parser("templates", help="stored search templates for reranked search")
    template_commands = templates.add_subparsers(dest="templates_command", required=True)
    install = template_commands.add_parser(
        "install", help="put search_templates/ into a cluster (idempotent)"
    )
    _config_argument(install)
    install.add_argument("--upstream", default=None, help="engine URL; default: upstream.url of the config")
    install.add_argument("--directory", type=Path, default=None, help="default: the packaged templates")

    from bridge.evaluation.command import add_eval_parser

    add_eval_parser(commands)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings.server, key, value)
    upstream = getattr(args, "upstream", None)
    if upstream is not None:
        try:
            settings.upstream.url = HttpUrl(upstream)
        except ValidationError as error:
            raise ConfigError(f"--upstream: not an http(s) URL (got {upstream!r})") from error
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as error:
        print(f"rerank-bridge: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from bridge.server.run import serve

        serve(settings)
        return 0
    if args.command == "config":
        print(json.dumps(masked(settings), indent=2))
        return 0
    if args.command == "templates":
        from bridge.templates import install_templates

        return install_templates(settings, args.directory)
    if args.command == "eval":
        from bridge.evaluation.command import run_eval

        return run_eval(settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
