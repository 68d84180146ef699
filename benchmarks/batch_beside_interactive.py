"""A batch beside an interactive tenant on the embedded default: what each costs the other.

Starts the platform on its embedded default (the demo model colocated with the gateway, and
`demo-embed`; SQLite, no Redis, one machine, a local Ray head) in a home and on a port of its
own, with one change: `demo` is shared by two tenants, `batch` and `interactive`, instead of
owned by `default`, so that two tenants call one engine. Keys are made in its store.

Load, both through the official `openai` client:
  batch        `--lines` chat lines (default 5,000), each a short prompt (about 20 tokens),
               `max_tokens` 32 with `ignore_eos`, uploaded once with files.create(purpose=
               "batch"); each measurement is a batches.create of that file, polled every
               0.5 s until `completed`. Batch tokens/s: the completion tokens of its output
               file's lines / wall time from create to completed as the client saw it.
  interactive  streamed /v1/completions, a short prompt (about 20 tokens), `max_tokens` 32
               with `ignore_eos`, open-loop Poisson arrivals at `--rate` per second (seeded),
               no retries; TTFT is the first streamed chunk as the client saw it.

Each repeat measures three phases, interleaved (the order reversed every other repeat, so
that drift over the run does not favour one side):
  alone  the interactive tenant for `--interactive-seconds`, no batch
  busy   the batch, with the interactive tenant driven at the same rate until it completes
         (TTFT counted for requests sent between create and completed)
  idle   the batch alone
and prints medians over the repeats with their spread (min-max): the batch's tokens/s idle
vs busy, the interactive TTFT p50/p95 without vs with the batch, and the ratios (target:
TTFT p95 with the batch within 10% of without). Single runs vary by +-20% on two cores.

Then, with the platform stopped, the peer (benchmarks/batch_peer.py; `--no-peer` skips it):
bare `vllm serve` with the demo engine's flags, the same interactive load for
`--interactive-seconds` alone and beside the batch's lines sent one at a time, back to back
(what the platform runs beside a busy tenant), interleaved the same way, and the same
ratios side by side: what the engine itself costs the tenant, against what the platform's
batch costs it.

The batch worker sends lines while no request waits for a slot, keeping a quarter of the
endpoint's slots free (serving/batch/capacity.py): with the embedded default's 256 slots up
to 192 lines run at once beside the interactive requests. `--max-ongoing-requests` bounds
`demo`'s slots otherwise, to see what fewer lines in the engine buy the interactive tenant
and cost the batch.

The load generator runs in this process at normal niceness; Ray runs the platform's workers
at nice 15, so the clients' clocks are not starved by the engine. It starts a local Ray head
of its own: nothing else may run one on the machine meanwhile (another `aifactory up`, the
end-to-end tests); on a shared machine, hold a lock around it, e.g. `flock FILE python ...`.
Usage: python benchmarks/batch_beside_interactive.py [--lines 5000] [--rate 4]
           [--batch-max-tokens 32] [--interactive-seconds 60] [--repeats 3]
           [--max-ongoing-requests N] [--no-peer]
           [--work DIR (keeps config, home, logs)] [--json (the table goes to stderr)]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from batch_peer import run_peer
from harness import (
    exit_on_sigterm,
    free_port,
    machine,
    machine_line,
    median_spread,
    print_result,
    stop_platform,
    work_directory,
)
from interactive_load import MAX_TOKENS, MODEL, drive_interactive, one_request, prompt

BATCH_TENANT, INTERACTIVE_TENANT = "batch", "interactive"
TTFT_P95_TARGET = 1.10  # with the batch / without
POLL_S = 0.5
# --- the platform ---------------------------------------------------------------------------

def platform_config(port: int, max_ongoing_requests: int | None = None) -> dict:
    """The embedded default on `port`, its `demo` endpoint shared by the two tenants (and,
    given, with its engine's slots bounded otherwise: the batch worker fills all but a
    quarter of them)."""
    from deployments.config import default_config

    config = default_config(port).model_dump(mode="json", exclude_defaults=True)
    config["tenants"] += [{"name": BATCH_TENANT}, {"name": INTERACTIVE_TENANT}]
    demo = next(e for e in config["endpoints"] if e["name"] == MODEL)
    demo.pop("owner")
    demo["shared_with"] = [BATCH_TENANT, INTERACTIVE_TENANT]
    if max_ongoing_requests is not None:
        demo["max_ongoing_requests"] = max_ongoing_requests
    return config


@contextlib.contextmanager
def platform(work: Path, max_ongoing_requests: int | None = None):
    """`aifactory up --detach` on the config above; yields its base URL and a key per tenant;
    always ends with `aifactory down` (also on Ctrl-C, SIGTERM or an error)."""
    import yaml

    port = free_port()
    home = work / "home"
    config = work / "platform.yaml"
    config.write_text(yaml.safe_dump(platform_config(port, max_ongoing_requests)))
    # A stopping gateway replica keeps answering for Serve's draining period (30 s by
    # default) so that load balancers see it leave; this platform has nobody to drain to.
    env = {**os.environ, "AIFACTORY_HOME": str(home),
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    env.pop("AIFACTORY_DATABASE_URL", None)  # the embedded default: SQLite in the home
    env.pop("AIFACTORY_REDIS_URL", None)  # and in-process quota counters
    cli = [sys.executable, "-m", "deployments.cli"]
    log = work / "up.log"
    try:
        started = time.monotonic()
        # In a process group of its own, as are the Ray processes it starts: a Ctrl-C at the
        # terminal (or a signal to this process group) reaches this script only, which then
        # stops the platform in order rather than leaving half of it killed. Not in a session
        # of its own: Linux schedules each session as one group (autogroup), across which
        # Ray's nice 15 counts for nothing, and this script's clock then stalled for seconds
        # behind the engine's busy processes (TTFT p95 3.5 s measured, 38 ms seen by a client
        # in the platform's session).
        with open(log, "w") as out:
            up = subprocess.run([*cli, "up", "--detach", "--config", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, process_group=0)
        if up.returncode != 0:
            raise RuntimeError(f"aifactory up failed ({up.returncode}):\n"
                               f"{log.read_text()[-3000:]}")
        print(f"# platform up on port {port} in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
        from serving.tenancy import Store, default_database_url

        store = Store(default_database_url(home))
        try:
            keys = {t: store.create_key(t).plaintext for t in (BATCH_TENANT, INTERACTIVE_TENANT)}
        finally:
            store.close()
        yield f"http://127.0.0.1:{port}/v1", keys
    finally:
        # A second Ctrl-C or SIGTERM must not cut the stop short: that would leave a Ray head
        # behind for whatever starts one next on this machine.
        signals = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        print("# stopping the platform", file=sys.stderr, flush=True)
        stop_platform(cli, env)
        for number, handler in signals.items():
            signal.signal(number, handler)


# --- the batch tenant's load (the interactive tenant's: interactive_load.py) ---------------

def jsonl_lines(text: str) -> list[str]:
    """Lines split at newlines only: JSON strings may hold U+0085 or U+2028 unescaped (the
    demo model's noise does), where str.splitlines() would cut a line in two."""
    return [line for line in text.split("\n") if line]


@dataclass
class BatchRun:
    batch_id: str
    status: str
    wall_s: float
    lines_ok: int
    lines_failed: int
    completion_tokens: int
    tokens_per_s: float
    first_error: str | None


async def run_batch(client, input_file_id: str,
                    ended: Callable[[], None] | None = None) -> BatchRun:
    """One batch of the uploaded file, from create to an end state (then `ended()`, before
    its files are read); its tokens from the output file's usage."""
    began = time.perf_counter()
    batch = await client.batches.create(input_file_id=input_file_id,
                                        endpoint="/v1/chat/completions",
                                        completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        await asyncio.sleep(POLL_S)
        batch = await client.batches.retrieve(batch.id)
    wall_s = time.perf_counter() - began
    if ended is not None:
        ended()
    tokens = lines_ok = 0
    if batch.output_file_id:
        for line in jsonl_lines((await client.files.content(batch.output_file_id)).text):
            tokens += json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
            lines_ok += 1
    failed, first_error = 0, None
    if batch.error_file_id:
        errors = jsonl_lines((await client.files.content(batch.error_file_id)).text)
        failed, first_error = len(errors), (errors[0][:300] if errors else None)
    elif batch.errors and batch.errors.data:
        first_error = str(batch.errors.data[0])[:300]
    return BatchRun(batch.id, batch.status, wall_s, lines_ok, failed, tokens,
                    tokens / wall_s, first_error)


def batch_file(lines: int, path: Path, max_tokens: int = MAX_TOKENS) -> Path:
    rng = random.Random(0)
    with open(path, "w") as out:
        for number in range(lines):
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt(rng)}],
                    "max_tokens": max_tokens, "ignore_eos": True}
            out.write(json.dumps({"custom_id": f"line-{number}", "method": "POST",
                                  "url": "/v1/chat/completions", "body": body}) + "\n")
    return path


# --- the phases -----------------------------------------------------------------------------

async def phase_alone(interactive, args, seed: int) -> dict:
    stop = asyncio.Event()
    load = asyncio.create_task(drive_interactive(interactive, args.rate, stop, seed))
    await asyncio.sleep(args.interactive_seconds)
    stop.set()
    return {"interactive": (await load).summary()}


async def phase_busy(batch_client, interactive, input_file_id: str, args, seed: int) -> dict:
    stop = asyncio.Event()
    load = asyncio.create_task(drive_interactive(interactive, args.rate, stop, seed))
    try:
        batch = await run_batch(batch_client, input_file_id, ended=stop.set)
    finally:
        stop.set()
    return {"interactive": (await load).summary(), "batch": asdict(batch)}


async def phase_idle(batch_client, input_file_id: str) -> dict:
    return {"batch": asdict(await run_batch(batch_client, input_file_id))}


async def measure(url: str, keys: dict[str, str], work: Path, args) -> list[dict]:
    from openai import AsyncOpenAI

    # Closed on this loop (see tests/async_clients.py for what an unclosed one can do).
    async with AsyncOpenAI(base_url=url, api_key=keys[BATCH_TENANT], max_retries=2,
                           timeout=120) as batch_client, \
            AsyncOpenAI(base_url=url, api_key=keys[INTERACTIVE_TENANT], max_retries=0,
                        timeout=120) as interactive:
        return await measure_phases(batch_client, interactive, work, args)


async def measure_phases(batch_client, interactive, work: Path, args) -> list[dict]:
    rng = random.Random(1)
    for _ in range(10):  # warm: the engine's first steps, the gateway's first requests
        await one_request(interactive, rng)
    with open(batch_file(20, work / "warm.jsonl"), "rb") as f:
        warm_file = await batch_client.files.create(file=f, purpose="batch")
    warm = await run_batch(batch_client, warm_file.id)
    print(f"# warm batch of 20 lines: {warm.status} in {warm.wall_s:.1f} s", file=sys.stderr)

    with open(batch_file(args.lines, work / "batch.jsonl", args.batch_max_tokens), "rb") as f:
        input_file = await batch_client.files.create(file=f, purpose="batch")
    runs = []
    for repeat in range(args.repeats):
        order = ["alone", "busy", "idle"]
        if repeat % 2:
            order.reverse()
        for phase in order:
            seed = 1000 * repeat + len(runs)
            if phase == "alone":
                result = await phase_alone(interactive, args, seed)
            elif phase == "busy":
                result = await phase_busy(batch_client, interactive, input_file.id, args,
                                          seed)
            else:
                result = await phase_idle(batch_client, input_file.id)
            runs.append({"repeat": repeat, "phase": phase, **result})
            print(f"# {repeat + 1}/{args.repeats} {phase:<5} " + describe(result),
                  file=sys.stderr, flush=True)
            await asyncio.sleep(2)  # the phase's tail apart from the next
    return runs


def describe(result: dict) -> str:
    parts = []
    if "batch" in result:
        b = result["batch"]
        parts.append(f"batch {b['status']} {b['lines_ok']} ok {b['lines_failed']} failed, "
                     f"{b['completion_tokens']} tokens in {b['wall_s']:.1f} s = "
                     f"{b['tokens_per_s']:.0f} tok/s")
    if "interactive" in result:
        i = result["interactive"]
        parts.append(f"interactive {i['requests']} requests ({i['errors']} errors) TTFT p50 "
                     f"{i['ttft_p50_ms']:.1f} ms p95 {i['ttft_p95_ms']:.1f} ms")
    return "; ".join(parts)


# --- the report -----------------------------------------------------------------------------

def summarise(runs: list[dict]) -> dict:
    """Medians over repeats with (min, max); ratios paired within each repeat."""
    by = {(r["repeat"], r["phase"]): r for r in runs}
    repeats = sorted({r["repeat"] for r in runs})

    def values(phase: str, side: str, key: str | None) -> list[float]:
        """E.g. ("busy", "batch", "tokens_per_s"); key None: the side is the value."""
        return [by[(n, phase)][side] if key is None else by[(n, phase)][side][key]
                for n in repeats if (n, phase) in by]

    def ratios(key: str, side: str, top: str, bottom: str) -> list[float]:
        return [by[(n, top)][side][key] / by[(n, bottom)][side][key] for n in repeats
                if (n, top) in by and (n, bottom) in by and by[(n, bottom)][side][key] > 0]

    summary = {
        "batch_tokens_per_s": {"idle": median_spread(values("idle", "batch", "tokens_per_s")),
                               "busy": median_spread(values("busy", "batch", "tokens_per_s"))},
        "batch_wall_s": {"idle": median_spread(values("idle", "batch", "wall_s")),
                         "busy": median_spread(values("busy", "batch", "wall_s"))},
        "ratio_batch_tokens_busy_to_idle": median_spread(
            ratios("tokens_per_s", "batch", "busy", "idle")),
        "batch_lines_failed": sum(values("idle", "batch", "lines_failed")
                                  + values("busy", "batch", "lines_failed")),
        "interactive_errors": {"without": sum(values("alone", "interactive", "errors")),
                               "with": sum(values("busy", "interactive", "errors"))},
        "interactive_requests": {"without": sum(values("alone", "interactive", "requests")),
                                 "with": sum(values("busy", "interactive", "requests"))},
    }
    for key in ("ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms"):
        summary[key] = {"without": median_spread(values("alone", "interactive", key)),
                        "with": median_spread(values("busy", "interactive", key))}
        summary[f"ratio_{key}"] = median_spread(ratios(key, "interactive", "busy", "alone"))
    ratio = summary["ratio_ttft_p95_ms"][0]
    summary["meets_ttft_target"] = not math.isnan(ratio) and ratio <= TTFT_P95_TARGET
    if any(phase == "peer-beside" for _, phase in by):
        peer = {"line_tokens_per_s": median_spread(
            values("peer-beside", "line_tokens_per_s", None))}
        for key in ("ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms"):
            peer[key] = {"without": median_spread(values("peer-alone", "interactive", key)),
                         "with": median_spread(values("peer-beside", "interactive", key))}
            peer[f"ratio_{key}"] = median_spread(
                ratios(key, "interactive", "peer-beside", "peer-alone"))
        peer["interactive_errors"] = sum(values("peer-alone", "interactive", "errors")
                                         + values("peer-beside", "interactive", "errors"))
        summary["peer_vllm_serve"] = peer
    return summary


def table(summary: dict, args) -> str:
    def cell(triple, digits=0) -> str:
        median, low, high = triple
        return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"

    def ratio(triple) -> str:
        return cell(triple, 2).replace(" [", "x [")

    width = 24
    lines = [f"median [min-max] over {args.repeats} repeats; {args.lines} batch lines, "
             f"interactive {args.rate:g} req/s; {args.batch_max_tokens} tokens a line, "
             f"{MAX_TOKENS} a request",
             f"{'':<22}{'interactive idle':>{width}}{'interactive busy':>{width}}"
             f"{'busy / idle':>{width}}",
             f"{'batch tok/s':<22}{cell(summary['batch_tokens_per_s']['idle']):>{width}}"
             f"{cell(summary['batch_tokens_per_s']['busy']):>{width}}"
             f"{ratio(summary['ratio_batch_tokens_busy_to_idle']):>{width}}",
             f"{'batch wall s':<22}{cell(summary['batch_wall_s']['idle'], 1):>{width}}"
             f"{cell(summary['batch_wall_s']['busy'], 1):>{width}}",
             "",
             f"{'':<22}{'without batch':>{width}}{'with batch':>{width}}"
             f"{'with / without':>{width}}"]
    for key, name in (("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p95_ms", "TTFT p95 ms"),
                      ("ttft_p99_ms", "TTFT p99 ms")):
        lines.append(f"{'interactive ' + name:<22}{cell(summary[key]['without'], 1):>{width}}"
                     f"{cell(summary[key]['with'], 1):>{width}}"
                     f"{ratio(summary['ratio_' + key]):>{width}}")
    lines.append(f"{'interactive requests':<22}"
                 f"{summary['interactive_requests']['without']:>{width}}"
                 f"{summary['interactive_requests']['with']:>{width}}")
    lines.append(f"{'  of which failed':<22}{summary['interactive_errors']['without']:>{width}}"
                 f"{summary['interactive_errors']['with']:>{width}}")
    lines.append(f"batch lines failed: {summary['batch_lines_failed']}")
    verdict = "met" if summary["meets_ttft_target"] else "missed"
    lines.append(f"target: TTFT p95 with the batch <= {TTFT_P95_TARGET:.2f}x without: {verdict}")
    peer = summary.get("peer_vllm_serve")
    if peer is not None:
        lines += ["", "peer: bare `vllm serve` (the demo engine's flags), the same interactive "
                  "load alone and beside",
                  "one batch line at a time (what the engine itself costs the tenant; lines at "
                  f"{cell(peer['line_tokens_per_s'])} tok/s)",
                  f"{'':<22}{'without line':>{width}}{'with line':>{width}}"
                  f"{'with / without':>{width}}"]
        for key, name in (("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p95_ms", "TTFT p95 ms"),
                          ("ttft_p99_ms", "TTFT p99 ms")):
            lines.append(f"{'interactive ' + name:<22}{cell(peer[key]['without'], 1):>{width}}"
                         f"{cell(peer[key]['with'], 1):>{width}}"
                         f"{ratio(peer['ratio_' + key]):>{width}}")
        lines.append(f"interactive requests failed: {peer['interactive_errors']}")
        lines.append(f"TTFT p95 with / without: platform {ratio(summary['ratio_ttft_p95_ms'])}, "
                     f"bare vllm serve {ratio(peer['ratio_ttft_p95_ms'])}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=5000, help="batch lines")
    ap.add_argument("--batch-max-tokens", type=int, default=MAX_TOKENS,
                    help="output tokens per batch line (fewer prefills for the same tokens)")
    ap.add_argument("--rate", type=float, default=4.0, help="interactive requests per second")
    ap.add_argument("--interactive-seconds", type=float, default=60.0,
                    help="length of the interactive-only phase")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-ongoing-requests", type=int,
                    help="the demo endpoint's engine slots (embedded default: 256)")
    ap.add_argument("--no-peer", dest="peer", action="store_false",
                    help="skip the peer: bare `vllm serve`, the tenant beside one line")
    ap.add_argument("--work", type=Path, help="keep the config, the home and logs here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    host = machine()  # the commit and load the platform starts with

    with contextlib.ExitStack() as stack:
        work = work_directory(stack, args.work, "batch-bench-")
        with platform(work, args.max_ongoing_requests) as (url, keys):
            runs = asyncio.run(measure(url, keys, work, args))
        if args.peer:
            try:
                runs += run_peer(work, args)
            except Exception as exc:  # the platform's figures stand without it
                print(f"# the peer failed: {exc!r}; see {work / 'vllm.log'}", file=sys.stderr)
    summary = summarise(runs)
    result = {"machine": host, "lines": args.lines, "rate": args.rate,
              "max_ongoing_requests": args.max_ongoing_requests or 256,
              "interactive_seconds": args.interactive_seconds, "max_tokens": MAX_TOKENS,
              "batch_max_tokens": args.batch_max_tokens, "repeats": args.repeats,
              "summary": summary, "runs": runs}
    report = (f"{machine_line(host)}; demo's max_ongoing_requests "
              f"{result['max_ongoing_requests']}\n" + table(summary, args))
    print_result(result, report, args.json)


if __name__ == "__main__":
    main()
