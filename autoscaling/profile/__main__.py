"""Command line: python -m autoscaling.profile --model FOLDER [--engine-arg KEY=VALUE ...]
[--out FILE] measures one vLLM engine and writes its profile (autoscaling.profile.schema)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from autoscaling.profile.report import render_text
from autoscaling.profile.run import Plan, ProfileRunFailed, measure
from autoscaling.profile.schema import ProfileError

_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _sizes(text: str) -> tuple[int, ...]:
    """"16,128,512": at least two distinct positive sizes, sorted."""
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers") from None
    if len(sizes) < 2 or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least two distinct positive sizes "
                                         "(a line needs two points)")
    return sizes


def _engine_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is read as JSON when it is JSON (8, true, "x"), else as text."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not _KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(f"{text!r}: KEY=VALUE with a vLLM engine argument "
                                         "name, e.g. max_model_len=512")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _bounded(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value}: between {low} and {high}")
        return value
    return parse


def add_measure_args(parser: argparse.ArgumentParser) -> None:
    """The options of a run, shared with `aifactory profile`."""
    default = Plan(model="", engine_args={})
    parser.add_argument("--prompt-lengths", type=_sizes, default=default.prompt_lengths,
                        metavar="N,N,...", help="prefill prompt lengths in tokens (default "
                        f"{','.join(map(str, default.prompt_lengths))})")
    parser.add_argument("--batch-sizes", type=_sizes, default=default.batch_sizes,
                        metavar="N,N,...", help="decode batch sizes (default "
                        f"{','.join(map(str, default.batch_sizes))})")
    parser.add_argument("--decode-tokens", type=_bounded(4, 4096), default=default.decode_tokens,
                        help=f"tokens each decoding request makes (default "
                        f"{default.decode_tokens})")
    parser.add_argument("--repeats", type=_bounded(1, 100), default=default.repeats,
                        help=f"repeats per point; the fit takes their median (default "
                        f"{default.repeats})")
    parser.add_argument("--out", type=Path, help="write the profile JSON here")
    parser.add_argument("--log", type=Path, help="keep the engine's log here")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="give up on the measuring process after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the profile JSON")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="echo the engine's log to stderr")


def run(args: argparse.Namespace, model: str, engine_args: dict[str, Any]) -> int:
    """Measures, writes and prints; 1 when the run or its figures failed."""
    plan = Plan(model=model, engine_args=engine_args, prompt_lengths=args.prompt_lengths,
                batch_sizes=args.batch_sizes, decode_tokens=args.decode_tokens,
                repeats=args.repeats)
    if max(plan.batch_sizes) > int(engine_args.get("max_num_seqs", 256)):
        print(f"error: batch size {max(plan.batch_sizes)} is above the engine's max_num_seqs",
              file=sys.stderr)
        return 2
    limit = engine_args.get("max_model_len")
    if isinstance(limit, int) and max(plan.prompt_lengths) >= limit:
        print(f"error: prompt length {max(plan.prompt_lengths)} leaves no room for a token "
              f"in max_model_len {limit}: give shorter --prompt-lengths", file=sys.stderr)
        return 2
    try:
        profile = measure(plan, timeout_s=args.timeout, log=args.log, echo=args.verbose)
    except (ProfileRunFailed, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(profile.to_json(), encoding="utf-8")
    if args.json:
        sys.stdout.write(profile.to_json())
    else:
        print(render_text(profile))
        if args.out:
            print(f"profile written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autoscaling.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a local model folder")
    parser.add_argument("--engine-arg", type=_engine_arg, action="append", default=[],
                        dest="engine_args", metavar="KEY=VALUE",
                        help="a vLLM engine argument, repeatable (on a CPU machine give "
                             "kv_cache_memory_bytes: vLLM's default share does not fit)")
    add_measure_args(parser)
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: not a model folder (no config.json)")
    return run(args, str(Path(args.model).resolve()), dict(args.engine_args))


if __name__ == "__main__":
    sys.exit(main())
