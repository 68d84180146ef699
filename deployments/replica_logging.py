"""Where the platform's log records go inside a Ray Serve replica."""

from __future__ import annotations

import logging

# The platform's own loggers, by package.
PLATFORM_LOGGERS = ("serving", "deployments", "autoscaling", "observability")


def log_to_serve_replica_log() -> None:
    """Inside a Serve replica, send the platform's log records straight to Serve's replica
    log handler. Otherwise they reach it only through Serve's capture of stderr, as INFO
    lines, and in throughput-optimised mode Serve buffers a replica's records (1000) until
    one of level ERROR arrives: an admin API traceback could sit unwritten. Sent directly, an
    error keeps its level and is written at once (and flushes what was buffered)."""
    serve_logger = logging.getLogger("ray.serve")
    for name in PLATFORM_LOGGERS:
        platform_logger = logging.getLogger(name)
        platform_logger.setLevel(logging.INFO)
        for handler in serve_logger.handlers:
            if handler not in platform_logger.handlers:
                platform_logger.addHandler(handler)
        platform_logger.propagate = False
