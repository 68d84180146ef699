"""Command line: python -m autoscaling.simulate [--scenario NAME] [--seed N] ... [--json], or
python -m autoscaling.simulate --suite [--json] for every scenario of the suite on seeds 0-9."""

from __future__ import annotations

import argparse
import json
import sys

from autoscaling.profile.schema import ProfileError
from autoscaling.simulate import SCENARIOS, simulate
from autoscaling.simulate.calibrated import load_calibrated
from autoscaling.simulate.engine import PROFILES
from autoscaling.simulate.report import render_text
from autoscaling.simulate.suite import SEEDS, SUITE, render_suite_text, run_suite


def _seeds(text: str) -> tuple[int, ...]:
    """"0-9" or "0,3,5"."""
    if "-" in text:
        first, last = text.split("-", 1)
        return tuple(range(int(first), int(last) + 1))
    return tuple(int(part) for part in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaling.simulate",
        description="Simulate a partition under the partition policy, three per-endpoint "
                    "baselines (Ray Serve's rule with fixed maxima, Ray Serve's rule sharing "
                    "the partition first come first served, a static allocation) and a "
                    "hindsight oracle, on the same trace.",
    )
    parser.add_argument("--suite", action="store_true",
                        help=f"every suite scenario ({', '.join(SUITE)}) on each seed; "
                             "their sizes are the suite's own")
    parser.add_argument("--seeds", type=_seeds, default=SEEDS,
                        help="suite seeds, e.g. 0-9 (default) or 0,3")
    parser.add_argument("--workers", type=int, default=None,
                        help="suite worker processes (default: one per core)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="noisy-neighbour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoints", type=int, default=12)
    parser.add_argument("--accelerators", type=float, default=24.0)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--engine", choices=sorted(PROFILES), default=None,
                        help="built-in engine profile (default h100-llama-8b; with --profile, "
                             "the one for the measured accelerator)")
    parser.add_argument("--profile", metavar="FILE.json",
                        help="a measured engine profile (python -m autoscaling.profile): its "
                             "step times, KV cache and cold start replace the --engine "
                             "profile's figures, e.g. autoscaling/profiles/cpu-demo.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw allocation per endpoint over time (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.endpoints < 1 or args.accelerators <= 0 or args.hours <= 0:
        parser.error("--endpoints, --accelerators and --hours must be positive")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be positive")
    if args.profile:
        try:
            args.engine = load_calibrated(args.profile, args.engine)
        except ProfileError as exc:
            parser.error(f"--profile {exc}")
    else:
        args.engine = args.engine or "h100-llama-8b"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.suite:
        result = run_suite(seeds=args.seeds, hours=args.hours, engine=args.engine,
                           workers=args.workers)
        text = render_suite_text
    else:
        result = simulate(args.scenario, seed=args.seed, endpoints=args.endpoints,
                          accelerators=args.accelerators, hours=args.hours, engine=args.engine,
                          plot=args.plot)
        text = render_text
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(text(result))
        if args.plot and not args.suite:
            print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
