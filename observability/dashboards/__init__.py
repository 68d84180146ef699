"""Grafana dashboards, built in code (`build.py`) and committed as JSON."""
