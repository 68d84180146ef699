"""`aifactory sla` against the live admin API: the table, --json, and the HTML file."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from observability.slo import SloSettings
from serving.tenancy import Outcome, UsageRecord
from tests.admin.test_cli import aifactory, rows

if TYPE_CHECKING:
    from tests.admin.conftest import Api

T0 = datetime(2025, 3, 14, 9, tzinfo=UTC)
WINDOW = ("--since", "2025-03-14T00:00:00Z", "--until", "2025-03-15")


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> tuple[int, str, str]:
        return aifactory(capsys, *argv, "--url", api.url, "--admin-key", api.admin_key)

    return run


@pytest.fixture
def acme(api: Api) -> Api:
    """Four ok requests (TTFT 0.2, 0.4, 0.6 and 1.2 s, ITL 0.05 s each), one error, one
    rejection; targets TTFT 1000 ms, ITL 100 ms, objective 0.9."""
    api.store.create_tenant("acme", slo=SloSettings(ttft_p95_ms=1000, itl_p95_ms=100,
                                                    objective=0.9))

    def record(n: int, outcome: Outcome, ttft: float | None, completion: int) -> UsageRecord:
        duration = None if ttft is None else ttft + 0.05 * (completion - 1)
        return UsageRecord(f"r{n}", "acme", "afk_abcdefgh", "llama", 10, completion, ttft,
                           duration, outcome, T0 + timedelta(minutes=n), None)

    api.store.record_usage([
        record(0, Outcome.OK, 0.2, 21), record(1, Outcome.OK, 0.4, 21),
        record(2, Outcome.OK, 0.6, 21), record(3, Outcome.OK, 1.2, 21),
        record(4, Outcome.ERROR, None, 0), record(5, Outcome.REJECTED, None, 0)])
    return api


def test_the_table(cli, acme: Api) -> None:
    code, out, err = cli("sla", "acme", *WINDOW)
    assert (code, err) == (0, "")
    table = rows(out)
    assert table[0][0].startswith("SLA of tenant acme, 2025-03-14 00:00:00Z")
    # nearest rank over 0.2 0.4 0.6 1.2: p50 the 2nd, p95 and p99 the 4th
    assert table[1:4] == [
        ["SLI", "REQUESTS", "P50", "P95", "P99", "P95 TARGET", "STATUS"],
        ["ttft", "4", "400 ms", "1200 ms", "1200 ms", "1000 ms", "MISSED"],
        ["itl", "4", "50 ms", "50 ms", "50 ms", "100 ms", "met"]]
    figures = dict(line for line in table[5:])
    assert figures["requests"] == "6"
    assert figures["availability"] == "80.00%"  # 4 ok / (4 ok + 1 error)
    assert figures["compliant"] == "75.00% of 4 (objective 90.00%: MISSED)"
    assert (figures["rejected"], figures["errors"], figures["total tokens"]) == ("1", "1", "144")


def test_json_and_html(cli, acme: Api, tmp_path: Path) -> None:
    html = tmp_path / "acme-sla.html"
    code, out, err = cli("sla", "acme", *WINDOW, "--json", "--html", str(html))
    assert code == 0
    report = json.loads(out)  # stdout stays pure JSON; the note goes to stderr
    assert (report["requests"], report["compliant"], report["judged"]) == (6, 3, 4)
    assert str(html) in err
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4
    assert "<script" not in page and not re.search(r"https?://", page)


def test_an_unknown_tenant_and_a_bad_time_are_refused(cli, api: Api) -> None:
    code, _, err = cli("sla", "ghost")
    assert code == 2 and "no tenant named 'ghost'" in err
    code, _, err = cli("sla", "ghost", "--since", "yesterday")
    assert code == 2 and "'yesterday' is not a time" in err


def test_an_unwritable_html_path_is_reported(cli, acme: Api, tmp_path: Path) -> None:
    code, _, err = cli("sla", "acme", "--html", str(tmp_path / "missing" / "r.html"))
    assert code == 2 and "cannot write" in err


def test_tenant_slo_targets_from_the_command_line(cli, api: Api) -> None:
    code, out, _ = cli("tenant", "create", "acme", "--ttft-p95-ms", "800", "--json")
    assert code == 0
    assert json.loads(out)["slo"] == {"ttft_p95_ms": 800, "itl_p95_ms": None, "objective": None}
    code, out, _ = cli("tenant", "update", "acme", "--objective", "0.995", "--itl-p95-ms", "50",
                       "--json")
    assert code == 0
    assert json.loads(out)["slo_targets"] == {"ttft_p95_ms": 800, "itl_p95_ms": 50,
                                              "objective": 0.995}
    code, _, _ = cli("tenant", "update", "acme", "--ttft-p95-ms", "default")
    assert code == 0
    assert api.store.get_tenant("acme").slo_settings == SloSettings(itl_p95_ms=50, objective=0.995)
    code, _, err = cli("tenant", "update", "acme", "--objective", "1")
    assert code == 2 and "objective: must be a ratio" in err
    assert api.store.get_tenant("acme").slo_settings == SloSettings(itl_p95_ms=50, objective=0.995)


def test_a_bad_slo_flag_is_a_usage_error(cli, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("tenant", "update", "acme", "--ttft-p95-ms", "fast")
    assert exited.value.code == 2
    assert "'fast' is neither a whole number nor 'default'" in capsys.readouterr().err
