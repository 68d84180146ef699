"""Every PromQL expression the platform ships, taken from the builders of the rules and the
dashboards (the code the committed YAML and JSON are generated from), so a test can run each
one against a real Prometheus.

Dashboard expressions carry Grafana template variables; they are returned with each variable
replaced by what its "All" choice sends (`$tenant` -> `.+`), i.e. runnable PromQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from observability.dashboards import build as dashboards
from observability.rules import build as rules

# What Grafana sends for each variable when "All" is chosen (the variables' allValue).
VARIABLES = {"$tenant": ".+", "$endpoint": ".+"}


@dataclass(frozen=True)
class Expression:
    """One expression and where it is used: `kind` is record, alert or panel; `name` the
    recorded series, the alert or the dashboard/panel title."""

    kind: str
    name: str
    expr: str


def runnable(expr: str) -> str:
    """A dashboard expression with its template variables replaced by their "All" values."""
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"an unknown template variable is left in {expr!r}")
    return expr


def rule_expressions() -> Iterator[Expression]:
    for group in rules.rule_groups()["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            yield Expression(kind, rule.get("record") or rule["alert"], rule["expr"])


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def panel_expressions() -> Iterator[Expression]:
    for name in dashboards.DASHBOARDS:
        model = dashboards.model(name)
        for panel in _panels(model):
            for target in panel.get("targets", []):
                yield Expression("panel", f"{model['title']} / {panel['title']}",
                                 runnable(target["expr"]))


def catalog() -> list[Expression]:
    """Every expression with where it is used, rules first, in file order."""
    return [*rule_expressions(), *panel_expressions()]


def all_expressions() -> list[str]:
    """Every distinct PromQL expression of the rules and dashboards, in first-use order."""
    return list(dict.fromkeys(e.expr for e in catalog()))
