"""Prometheus recording and alerting rules, built in code (`build.py`) and committed as YAML."""
