"""Reading the platform's metrics the way Prometheus does: every target in Ray's
service-discovery file, scraped over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

SERVICE_DISCOVERY = Path("/tmp/ray/prom_metrics_service_discovery.json")
# Ray's processes report to their metrics agent every 10 s (metrics_report_interval_ms).
EXPORT_WAIT_S = 90

Sample = tuple[str, dict[str, str], float]


def targets() -> list[str]:
    groups = json.loads(SERVICE_DISCOVERY.read_text())
    return [t for group in groups for t in group["targets"]]


def scrape(prefix: str = "ray_aifactory_") -> list[Sample]:
    """Every sample whose name starts with `prefix`, from every target that answers."""
    out: list[Sample] = []
    for target in targets():
        try:
            text = httpx.get(f"http://{target}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue  # a target that is restarting: Prometheus would skip it too
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith(prefix):
                    out.append((s.name, dict(s.labels), s.value))
    return out


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of `name` over every process (WorkerId, node, ...) whose labels include `labels`."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def series(samples: list[Sample], name: str, **labels: str) -> list[dict[str, str]]:
    return [lab for n, lab, _ in samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())]


def settled(prefix: str = "ray_aifactory_", quiet_s: float = 11.0) -> list[Sample]:
    """A scrape that no earlier traffic still changes: equal to one taken a full export
    interval before it (what other tests sent may not have been exported yet)."""
    before = _comparable(scrape(prefix))
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        time.sleep(quiet_s)
        now = scrape(prefix)
        if _comparable(now) == before or time.monotonic() > deadline:
            return now
        before = _comparable(now)


def _comparable(samples: list[Sample]) -> dict:
    # What requests move: counters and histograms, but not gauges (KV cache, in flight) nor
    # the autoscaler's decisions, which count up on every tick of its loop.
    return {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples
            if n.endswith(("_total", "_count", "_sum")) and "autoscaler" not in n}


def wait_for(check: Callable[[list[Sample]], bool], prefix: str = "ray_aifactory_") -> list[Sample]:
    """Scrape until `check` holds (the export interval has passed), or give the last scrape."""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while True:
        samples = scrape(prefix)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(2)
