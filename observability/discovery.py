"""Prometheus file-based service discovery for a platform's Ray nodes: the metrics agent of
each live node, in the file and format Ray's own dashboard writes
(/tmp/ray/prom_metrics_service_discovery.json), for a local Ray started without the
dashboard (which costs a dozen processes on a small node)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RAY_SERVICE_DISCOVERY = Path("/tmp/ray/prom_metrics_service_discovery.json")


def node_targets(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """"host:port" of each live node's metrics agent, from `ray.nodes()`."""
    return sorted(f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in nodes
                  if n.get("Alive") and n.get("MetricsExportPort"))


def write_service_discovery(targets: list[str], path: Path = RAY_SERVICE_DISCOVERY) -> None:
    """Write atomically: Prometheus may read the file at any moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    os.replace(partial, path)
