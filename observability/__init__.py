"""Measures and reports the platform: the metric catalog (`observability.metrics`), tracing
(`observability.tracing`), the Prometheus configuration, rules, dashboards and SLA reports."""
