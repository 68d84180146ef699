"""Command line: python -m autoscaling.simulate [--scenario NAME] [--seed N] ... [--json]."""

from __future__ import annotations

import argparse
import json
import sys

from autoscaling.simulate import SCENARIOS, simulate
from autoscaling.simulate.engine import PROFILES
from autoscaling.simulate.report import render_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaling.simulate",
        description="Simulate a partition under the partition policy and under independent "
                    "Ray Serve default autoscalers, on the same trace.",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="noisy-neighbour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoints", type=int, default=12)
    parser.add_argument("--accelerators", type=float, default=24.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--engine", choices=sorted(PROFILES), default="h100-llama-8b")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw allocation per endpoint over time (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.endpoints < 1 or args.accelerators <= 0 or args.hours <= 0:
        parser.error("--endpoints, --accelerators and --hours must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = simulate(args.scenario, seed=args.seed, endpoints=args.endpoints,
                      accelerators=args.accelerators, hours=args.hours, engine=args.engine,
                      plot=args.plot)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_text(result))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
