"""The Prometheus rules: the committed YAML is what the code builds, promtool accepts it, and
promtool's unit tests (observability/rules/tests) show each alert firing on synthetic series
and staying silent on healthy ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observability.rules import build

RULE_TESTS = sorted((build.RULES_FILE.parent / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)",
                    pytrace=False)
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_committed_rules_are_what_the_code_builds() -> None:
    assert build.RULES_FILE.read_text() == build.render(), (
        "observability/rules/aifactory.rules.yml is stale: python -m observability.rules.build")


def test_promtool_accepts_the_rules(promtool: str) -> None:
    checked = run(promtool, "check", "rules", build.RULES_FILE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 31 rules found" in checked.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for group in build.rule_groups()["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for path in RULE_TESTS
              for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", [])
              if case["exp_alerts"]}
    assert alerts == tested


@pytest.mark.parametrize("rule_test", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool: str, rule_test: Path) -> None:
    tested = run(promtool, "test", "rules", rule_test)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_broken_alert_is_caught_by_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the stall alert's `for` lengthened past the test's
    window, the case that expects it to fire reports a failure."""
    rules = build.rule_groups()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "AIFactoryEngineStalled":
                rule["for"] = "30m"
    (tmp_path / "aifactory.rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    case = build.RULES_FILE.parent / "tests" / "capacity_test.yml"
    (tmp_path / "tests" / case.name).write_text(case.read_text())
    tested = run(promtool, "test", "rules", tmp_path / "tests" / case.name)
    assert tested.returncode != 0
    assert "AIFactoryEngineStalled" in tested.stdout + tested.stderr
