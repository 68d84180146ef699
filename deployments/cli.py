"""`aifactory`: make the demo model, bring the platform up and down, show its status."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from deployments import home as data
from deployments.admin_cli import register_admin_commands
from deployments.admin_key import configured_admin_key, ensure_admin_key
from deployments.config import (
    DEFAULT_TENANT,
    DEMO_MODEL,
    ConfigError,
    PlatformConfig,
    default_config,
    load_config,
)
from deployments.profile_cli import register_profile_command
from deployments.tenancy_setup import DEFAULT_KEY_FILE

READY_TIMEOUT_S = 900
# Ray's default GCS port, 6379, is Redis's; a local head listens here instead.
LOCAL_RAY_PORT = 6390



def serve_proxy_port(config: PlatformConfig) -> int:
    """Serve's own HTTP port: HAProxy's when it is the ingress, else an unused internal one
    beside the gateway's."""
    return config.server.port + (0 if config.server.ingress == "haproxy" else 100)


def ray_env(config: PlatformConfig) -> dict[str, str]:
    """Environment for every Ray process of the platform (Serve reads these at import).

    Serve's throughput-optimised mode runs user code on the replica's own loop and lets the
    ingress replica serve HTTP itself ("direct ingress"), so no proxy process relays each
    streamed chunk. With direct ingress the port range is pinned to the configured port, so
    the gateway replica listens exactly there; with HAProxy, HAProxy listens there and the
    replicas take ports of Serve's own range."""
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DEFAULT_HTTP_HOST": config.server.host,
        # vLLM's engine core must not be forked from a threaded Ray worker.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        # Counters are exported once, as `..._total`, without Ray's legacy gauge duplicate.
        "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
        # The gateway's x-request-id once; Serve appends its own (gateway.serve_middleware).
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH":
            "serving.gateway.serve_middleware.serve_http_middlewares",
    }
    # Tracing is configured by the standard OTEL_* variables (observability.tracing); the
    # replicas see the ones `aifactory up` was started with.
    env.update({k: v for k, v in os.environ.items() if k.startswith("OTEL_")})
    if config.server.ingress == "haproxy":
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    else:
        # [port, port + 2): the gateway's port, and one for the ingress of the application
        # holding the endpoints created through the admin API (deployments.admin_endpoints),
        # which no client calls.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(config.server.port)
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(config.server.port + 2)
    return env


def _say(msg: str) -> None:
    print(msg, flush=True)


# -- models ----------------------------------------------------------------------------------


def resolve_models(config: PlatformConfig) -> dict[str, str]:
    """Endpoint name -> local model folder. The demo model is made on first use."""
    from deployments.demo_model import is_model_dir, write_demo_model

    paths = {}
    for i, endpoint in enumerate(config.endpoints):
        if endpoint.model == DEMO_MODEL:
            folder = data.demo_model_dir()
            if not is_model_dir(folder):
                _say(f"making the demo model in {folder} ...")
                write_demo_model(folder)
            paths[endpoint.name] = str(folder)
            continue
        folder = Path(endpoint.model).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"endpoints.{i}.model: {endpoint.model} is not a model folder (no config.json); "
                f"models are loaded from local folders, no hub is reached"
            )
        paths[endpoint.name] = str(folder.resolve())
    return paths


def prepare_tenancy(config: PlatformConfig, using_default: bool):
    """Migrate the store, apply the config's tenants and endpoints, and (for the embedded
    default) make sure the default tenant has a key on disk. Settings come from the
    environment here, at the edge: AIFACTORY_DATABASE_URL, AIFACTORY_REDIS_URL."""
    from deployments.app import TenancySettings
    from deployments.tenancy_setup import (
        apply_config,
        ensure_default_key,
        prepare_store,
    )
    from serving.tenancy import Store, TenancyError

    url = prepare_store(data.home())
    # The partition controller runs on every platform (created endpoints may be autoscaled).
    from autoscaling.live.persistence import upgrade as upgrade_autoscaler_tables

    upgrade_autoscaler_tables(url)
    store = Store(url)
    try:
        apply_config(store, config)
        new_key = ensure_default_key(store, data.home()) if using_default else None
        if ensure_admin_key(store, data.home()) is None:
            _say("no admin key yet: `aifactory admin bootstrap` makes one")
    except TenancyError as exc:
        raise ConfigError(f"the config does not fit the tenancy store: {exc}") from None
    finally:
        store.close()
    settings = TenancySettings(
        database_url=url,
        redis_url=os.environ.get("AIFACTORY_REDIS_URL") or None,
        redis_prefix=os.environ.get("AIFACTORY_REDIS_PREFIX") or "aifactory:admission",
        ledger_spool_dir=str(data.home() / "ledger-spool"),
    )
    return settings, new_key


def check_engine_args(config: PlatformConfig, paths: dict[str, str]) -> None:
    """Parse every endpoint's engine arguments with vLLM's own parser now, so a bad flag is
    refused at start with the endpoint named, not found later in a replica's log."""
    from deployments.app import engine_args
    from serving.engine.host import parse_vllm_args, vllm_cli_args

    for i, endpoint in enumerate(config.endpoints):
        argv = vllm_cli_args(paths[endpoint.name], endpoint.name,
                             engine_args(endpoint, config.partition))
        try:
            parse_vllm_args(argv)
        except Exception as exc:  # argparse's and vLLM's own checks
            raise ConfigError(f"endpoints.{i}.engine: vLLM refuses these arguments: {exc}") from None


# -- Ray -------------------------------------------------------------------------------------


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _start_local_ray(config: PlatformConfig) -> None:
    cmd = [
        _ray_bin(), "start", "--head", f"--port={LOCAL_RAY_PORT}", "--disable-usage-stats",
        "--include-dashboard=false",
        f"--num-cpus={config.partition.count:g}" if config.partition.accelerator == "cpu" else
        f"--num-gpus={config.partition.count:g}",
    ]
    env = {**os.environ, **ray_env(config)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"could not start Ray: {result.stderr.strip() or result.stdout.strip()}")


def _connect(address: str | None, env: dict[str, str] | None = None) -> None:
    import logging

    import ray

    os.environ.update(env or {})  # this driver imports Serve too
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": env} if env else None)


def _ray_is_running() -> bool:
    """Whether a local Ray head answers: Ray records its address in this file when it starts."""
    import socket

    try:
        host, _, port = Path("/tmp/ray/ray_current_cluster").read_text().split()[0].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError, IndexError):
        return False


# -- commands --------------------------------------------------------------------------------


def _base_url(config: PlatformConfig) -> str:
    host = config.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{config.server.port}"


def _admin_authorization() -> dict[str, str]:
    """The operator's admin key, if this machine has one: /ready then names each endpoint."""
    key = configured_admin_key()
    return {"authorization": f"Bearer {key}"} if key else {}


def _get_json(url: str, timeout: float = 5,
              headers: dict[str, str] | None = None) -> tuple[int, dict | None]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _serve_progress() -> str:
    from ray import serve

    from deployments.app import APP_NAME

    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:
        return "starting Serve"
    if app is None:
        return "deploying"
    starting = {entry.deployment: entry for entry in _engine_starts() if not entry.ready}
    parts = [f"{name}: {_phase_or_status(starting.get(name), d.status.value)}"
             for name, d in sorted(app.deployments.items())]
    return f"{app.status.value} ({', '.join(parts)})"


def _engine_starts() -> list:
    """The engine replicas' starts as they publish them (serving.engine.start_progress)."""
    from serving.engine.start_progress import read_starts

    try:
        return read_starts()
    except Exception:  # noqa: BLE001 - progress only; Serve's status is shown instead
        return []


def _phase_or_status(entry, status: str) -> str:
    """A starting replica's phase ("starting workers and loading weights"), else Serve's status."""
    from serving.engine.start_phases import DOING

    return DOING[entry.marks[-1].phase] if entry is not None and entry.marks else status


def cmd_up(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config) if args.config else default_config()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if overrides:
            config = config.model_copy(
                update={"server": config.server.model_copy(update=overrides)}
            )
        paths = resolve_models(config)
        check_engine_args(config, paths)
        tenancy, new_key = prepare_tenancy(config, using_default=not args.config)
    except ConfigError as exc:
        print(f"aifactory: {exc}", file=sys.stderr)
        return 2

    address = args.address or os.environ.get("RAY_ADDRESS")
    started_ray = False
    if not address:
        if _ray_is_running():
            print("aifactory: a local Ray instance is already running; "
                  "run `aifactory down` first or pass --address", file=sys.stderr)
            return 1
        _say(f"starting Ray ({config.partition.count:g} {config.partition.accelerator} slots) ...")
        _start_local_ray(config)
        started_ray = True
    env = ray_env(config)
    _connect(address, env)
    if started_ray:  # without Ray's dashboard, say where Prometheus finds the metrics agent
        import ray

        from observability.discovery import node_targets, write_service_discovery

        write_service_discovery(node_targets(ray.nodes()))
    data.save_state({"url": _base_url(config), "started_ray": started_ray, "address": address})
    from serving.engine.warm_processes import forking_wanted

    if forking_wanted():  # a warm server on every node
        from deployments.node_forkservers import start_node_forkservers

        start_node_forkservers()

    from ray import serve

    from deployments.app import APP_NAME, build_app, needs_external_scaler

    # Clients reach the gateway replicas directly on server.port (see ray_env). Serve still
    # runs its own proxy; it listens on an internal port beside it.
    serve.start(
        http_options={"host": config.server.host, "port": serve_proxy_port(config)},
        controller_options={"runtime_env": {"env_vars": env}},
    )
    # serve.run returns once the application is running; show progress meanwhile.
    failure: list[BaseException] = []

    def deploy() -> None:
        try:
            serve.run(build_app(config, paths, tenancy, data.link_secret()), name=APP_NAME,
                      route_prefix="/",
                      external_scaler_enabled=needs_external_scaler(config))
        except BaseException as exc:  # reported by the progress loop below
            failure.append(exc)

    threading.Thread(target=deploy, name="deploy", daemon=True).start()
    url = _base_url(config)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while True:
        status, _ = _get_json(f"{url}/ready")
        if status == 200:
            break
        progress = _serve_progress()
        if progress != last:
            _say(f"  {progress}")
            last = progress
        if failure or time.monotonic() > deadline:
            reason = failure[0] if failure else f"not ready after {READY_TIMEOUT_S}s: {progress}"
            print(f"aifactory: the platform did not become ready: {reason}\n"
                  f"(`aifactory down` stops what was started)", file=sys.stderr)
            return 1
        time.sleep(1)
    _say(f"ready: {url}/v1  (OpenAI base URL)")
    if new_key is not None:
        _say(f"API key of tenant `{DEFAULT_TENANT}` (shown once; kept in "
             f"{data.home() / DEFAULT_KEY_FILE}):\n  {new_key}")
    if args.detach:
        return 0

    _say("serving; Ctrl-C stops it")
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop["now"]:
        time.sleep(0.5)
        if data.load_state() is None:  # `aifactory down` from another shell stopped it
            _say("stopped by `aifactory down`")
            return 0
    return cmd_down(args)


def _is_ray_haproxy(cmd: str) -> bool:
    """The HAProxy Ray Serve started (its config lives in Ray's session folder)."""
    return "haproxy" in cmd.split()[0] and "/ray" in cmd


def _kill_orphaned_engines() -> None:
    """vLLM's engine-core processes outlive a replica that was killed rather than shut down
    (they ignore SIGTERM while busy), and `ray stop` leaves Serve's HAProxy running. An engine
    whose parent is gone serves nobody, nor does that HAProxy: end them. A forkserver
    (serving.engine.warm_processes), the parent of engine processes, outlives its replica or
    its node's keeper with them until they follow their own replica out."""
    from serving.engine.warm_processes import FORKSERVER_TITLE

    for _ in range(4):  # a forkserver's engines, then their workers, are orphaned in turn
        out = subprocess.run(["ps", "-eo", "pid,ppid,stat,args"], capture_output=True, text=True)
        orphans = [
            int(pid)
            for pid, ppid, stat, cmd in (line.split(None, 3) for line in out.stdout.splitlines()[1:])
            if ppid == "1" and not stat.startswith("Z")
            and (cmd.startswith(("VLLM::", FORKSERVER_TITLE)) or _is_ray_haproxy(cmd))
        ]
        if not orphans:
            return
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def cmd_down(args: argparse.Namespace) -> int:
    state = data.load_state() or {}
    address = getattr(args, "address", None) or state.get("address")
    if _ray_is_running() or address:
        try:
            _connect(address)
            import ray
            from ray import serve

            from deployments.app import APP_NAME

            if address:  # a shared cluster: remove only this platform's application
                serve.delete(APP_NAME)
                from deployments.node_forkservers import stop_node_forkservers

                stop_node_forkservers()
            else:
                serve.shutdown()
            ray.shutdown()
        except Exception as exc:  # still stop Ray below
            print(f"aifactory: Serve shutdown: {exc}", file=sys.stderr)
    if state.get("started_ray", True) and not address:
        subprocess.run([_ray_bin(), "stop", "--force"], capture_output=True)
        _kill_orphaned_engines()
    data.clear_state()
    _say("stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = data.load_state()
    if state is None or not _ray_is_running() and not state.get("address"):
        _say("not running")
        return 3
    _connect(state.get("address"))
    from ray import serve

    from deployments.app import APP_NAME
    from serving.engine.start_phases import describe

    app = serve.status().applications.get(APP_NAME)
    code, ready = _get_json(f"{state['url']}/ready", headers=_admin_authorization())
    starts, now = _engine_starts(), time.time()
    if args.json:
        out = {
            "url": state["url"],
            "ready": code == 200,
            "endpoints": (ready or {}).get("endpoints", {}),
            "deployments": {
                name: {"status": d.status.value, "replicas": dict(d.replica_states)}
                for name, d in (app.deployments.items() if app else [])
            },
            "starts": [entry.view(now) for entry in starts],
        }
        print(json.dumps(out, indent=2))
        return 0 if code == 200 else 1
    _say(f"url:   {state['url']}/v1")
    _say(f"ready: {'yes' if code == 200 else 'no'}")
    if app is not None:
        _say(f"{'deployment':<28}{'status':<14}replicas")
        for name, d in sorted(app.deployments.items()):
            replicas = ", ".join(f"{k}={v}" for k, v in d.replica_states.items()) or "-"
            _say(f"{name:<28}{d.status.value:<14}{replicas}")
    for name, ok in ((ready or {}).get("endpoints") or {}).items():
        _say(f"endpoint {name}: {'ready' if ok else 'not ready'}")
    for entry in starts:  # starting replicas, phase by phase; the last start of ready ones
        _say(f"{entry.deployment} {entry.replica}: {describe(entry.marks, now)}")
    return 0 if code == 200 else 1


def cmd_demo_model(args: argparse.Namespace) -> int:
    from deployments.demo_model import write_demo_model

    path = write_demo_model(args.path)
    _say(f"wrote the demo model to {path}")
    return 0


def cmd_demo_adapter(args: argparse.Namespace) -> int:
    from deployments.demo_adapter import write_demo_adapter
    from deployments.demo_model import is_model_dir, write_demo_model

    base = Path(args.base) if args.base else data.demo_model_dir()
    if not args.base and not is_model_dir(base):
        _say(f"making the demo model in {base} ...")
        write_demo_model(base)
    path = write_demo_adapter(args.path, base, seed=args.seed, rank=args.rank)
    _say(f"wrote a LoRA adapter (rank {args.rank}) for {base} to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the platform (the embedded demo without --config)")
    up.add_argument("--config", help="platform YAML file")
    up.add_argument("--host", help="override server.host")
    up.add_argument("--port", type=int, help="override server.port")
    up.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else local)")
    up.add_argument("--detach", action="store_true", help="return once ready, leave it running")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the platform and the Ray instance it started")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="endpoints, replicas and readiness")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo-model", help="write the small demo model to PATH")
    demo.add_argument("path")
    demo.set_defaults(func=cmd_demo_model)

    adapter = sub.add_parser("demo-adapter", help="write a small LoRA adapter for the demo model "
                                                  "to PATH")
    adapter.add_argument("path")
    adapter.add_argument("--base", help="the base model folder (default: the demo model, "
                                        "made on first use)")
    adapter.add_argument("--seed", type=int, default=0, help="seeds the adapter's weights")
    adapter.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    adapter.set_defaults(func=cmd_demo_adapter)

    register_admin_commands(sub)
    register_profile_command(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
