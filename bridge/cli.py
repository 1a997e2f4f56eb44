"""``rerank-bridge``: serve, check the config, install search templates, evaluate relevance."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge.config import ConfigError, Override, Settings, apply_overrides, load_settings, masked


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
    """The config file under ``BRIDGE_*`` under the command line, each layer validated the same way."""
    settings = load_settings(args.config)
    given = (
        Override("--host", "server", "host", getattr(args, "host", None)),
        Override("--port", "server", "port", getattr(args, "port", None)),
        Override("--upstream", "upstream", "url", getattr(args, "upstream", None)),
    )
    return apply_overrides(settings, [override for override in given if override.value is not None])


def _check_models(settings: Settings) -> int:
    """``config check``'s second half: what ``serve`` would refuse when it loads the models (exit 2), and
    what would make them slow (warnings)."""
    if not settings.models:
        return 0
    from bridge.scoring.preflight import check_model

    failed = False
    for name, model in settings.models.items():
        for finding in check_model(name, model):
            label = "error" if finding.error else "warning"
            print(f"rerank-bridge: {label}: {finding.where}: {finding.message}", file=sys.stderr)
            failed = failed or finding.error
    return 2 if failed else 0


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
        status = _check_models(settings)
        if status == 0:
            print(json.dumps(masked(settings), indent=2))
        return status
    if args.command == "templates":
        from bridge.templates import install_templates

        return install_templates(settings, args.directory)
    if args.command == "eval":
        from bridge.evaluation.command import run_eval

        return run_eval(settings, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
