"""`aifactory profile ENDPOINT`: measures one endpoint's engine (autoscaling.profile) with the
model folder and engine arguments the platform starts it with, from the config file or the
embedded default."""

from __future__ import annotations

import argparse
import sys

from deployments.config import ConfigError, default_config, load_config


def cmd_profile(args: argparse.Namespace) -> int:
    from autoscaling.profile.__main__ import run
    from deployments.cli import resolve_models
    from deployments.engine import engine_args

    try:
        config = load_config(args.config) if args.config else default_config()
        endpoint = config.endpoint(args.endpoint)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError:
        names = ", ".join(e.name for e in config.endpoints)
        print(f"error: no endpoint {args.endpoint!r} in the config (it has {names})",
              file=sys.stderr)
        return 2
    if endpoint.engine.extra_args.get("runner") == "pooling":
        print(f"error: {endpoint.name} is a pooling (embedding) engine; the profile measures "
              "text generation", file=sys.stderr)
        return 2
    only = config.model_copy(update={"endpoints": [endpoint]})
    try:
        model = resolve_models(only)[endpoint.name]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(args, model, engine_args(endpoint, config.partition))


def register_profile_command(subparsers: argparse._SubParsersAction) -> None:
    from autoscaling.profile.__main__ import add_measure_args

    parser = subparsers.add_parser(
        "profile", help="measure an endpoint's engine (prefill, decode steps, KV cache, cold "
                        "start) into a profile the autoscaling simulator reads")
    parser.add_argument("endpoint", help="an endpoint of the config, e.g. demo")
    parser.add_argument("--config", help="platform YAML file (default: the embedded default)")
    add_measure_args(parser)
    parser.set_defaults(func=cmd_profile)
