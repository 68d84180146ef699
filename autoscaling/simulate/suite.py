"""The scenario suite: every scenario of issue 20 on seeds 0-9, policy vs best baseline vs
oracle, with the item-3 targets marked met or missed per run and counted per scenario."""

from __future__ import annotations

import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from autoscaling.simulate.engine import EngineProfile
from autoscaling.simulate.report import BASELINES, ORACLE, POLICY, describe_loss

# Each scenario's world; every one runs for an hour, on the h100-llama-8b profile unless
# told otherwise.
SUITE: dict[str, dict[str, float]] = {
    "noisy-neighbour": {"endpoints": 12, "accelerators": 24},
    "contested": {"endpoints": 12, "accelerators": 24},
    "diurnal-sporadic": {"endpoints": 48, "accelerators": 24},  # one replica each fills it
    "batch-backlog": {"endpoints": 12, "accelerators": 24},  # plus the batch endpoint
    "replica-failure": {"endpoints": 12, "accelerators": 24},
}
SEEDS = tuple(range(10))
TARGETS = ("goodput_vs_best_baseline", "goodput_vs_oracle", "guaranteed_fit_slo_attainment_min",
           "max_flaps_per_endpoint_10min", "capacity_violations")


def _one(job: tuple[str, int, dict[str, float], float, str | EngineProfile]) -> dict[str, Any]:
    from autoscaling.simulate import simulate

    scenario, seed, world, hours, engine = job
    return simulate(scenario, seed=seed, hours=hours, engine=engine, **world)


def run_suite(scenarios: tuple[str, ...] = tuple(SUITE), seeds: tuple[int, ...] = SEEDS, *,
              hours: float = 1.0, engine: str | EngineProfile = "h100-llama-8b",
              workers: int | None = None) -> dict[str, Any]:
    """Every scenario x seed, in that order, spread over worker processes (one per core)."""
    jobs = [(scenario, seed, SUITE[scenario], hours, engine)
            for scenario in scenarios for seed in seeds]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        results = [_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_one, jobs))
    return {"runs": results, "summary": {scenario: summarise(
        [r for r in results if r["scenario"] == scenario]) for scenario in scenarios}}


def _goodput(result: dict[str, Any], name: str) -> float:
    return result["policies"][name]["goodput_per_accel_hour"]


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds of the headline figures, and how many seeds met each target."""
    def median(values: list[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return round(statistics.median(present), 3) if present else None

    best = [_goodput(r, r["best_baseline"]) for r in results]
    return {
        "seeds": [r["seed"] for r in results],
        "median_goodput_per_accel_hour": {
            POLICY: median([_goodput(r, POLICY) for r in results]),
            "best_baseline": median(best),
            **{name: median([_goodput(r, name) for r in results]) for name in BASELINES},
            ORACLE: median([_goodput(r, ORACLE) for r in results]),
            "upper_bound": median([r["oracle"]["upper_bound"]["goodput_per_accel_hour"]
                                   for r in results]),
        },
        "best_baseline_by_seed": [r["best_baseline"] for r in results],
        # Goodput alone favours whoever serves batch work or drops small tenants: beside it,
        # the share of interactive requests served within SLO.
        "median_interactive_slo_attainment": {
            POLICY: median([r["policies"][POLICY]["slo_attainment_overall"] for r in results]),
            "best_baseline": median([r["policies"][r["best_baseline"]]["slo_attainment_overall"]
                                     for r in results]),
            ORACLE: median([r["policies"][ORACLE]["slo_attainment_overall"] for r in results]),
        },
        "median_ratio": {
            "vs_best_baseline": median([r["targets"]["goodput_vs_best_baseline"]["value"]
                                        for r in results]),
            "vs_oracle": median([r["targets"]["goodput_vs_oracle"]["value"] for r in results]),
            "vs_upper_bound": median([r["targets"]["goodput_vs_oracle"]["vs_upper_bound"]
                                      for r in results]),
        },
        "targets_met": {
            name: _count([r["targets"][name]["met"] for r in results]) for name in TARGETS},
    }


def _count(verdicts: list[bool | None]) -> str:
    judged = [v for v in verdicts if v is not None]
    return f"{sum(judged)}/{len(judged)}" if judged else "n/a"


def render_suite_text(suite: dict[str, Any]) -> str:
    """Per scenario: one row per seed, a median row, the targets met, why they were missed."""
    lines: list[str] = []
    header = (f"{'seed':>4} {'policy':>8} {'best baseline':>22} {'oracle':>8} {'bound':>8} "
              f"{'/best':>6} {'/oracle':>7} {'guar.fit':>8} {'flaps':>5} {'viol':>4}")
    for scenario, summary in suite["summary"].items():
        results = [r for r in suite["runs"] if r["scenario"] == scenario]
        first = results[0]
        title = (f"{scenario}: {first['endpoints']} endpoints on {first['accelerators']:g} "
                 f"accelerators, {first['hours']:g} h; goodput in millions of tokens per "
                 "accelerator-hour")
        lines += ["", title, header]
        notes: list[str] = []
        for r in results:
            t = r["targets"]
            best = r["best_baseline"]
            fit = t["guaranteed_fit_slo_attainment_min"]["value"]
            lines.append(
                f"{r['seed']:>4} {_m(_goodput(r, POLICY)):>8} "
                f"{_m(_goodput(r, best)) + ' ' + best:>22} {_m(_goodput(r, ORACLE)):>8} "
                f"{_m(r['oracle']['upper_bound']['goodput_per_accel_hour']):>8} "
                f"{_mark(t['goodput_vs_best_baseline']):>6} {_mark(t['goodput_vs_oracle']):>7} "
                f"{_mark(t['guaranteed_fit_slo_attainment_min'], '{:.4f}' if fit else '{}'):>8}"
                f" {_mark(t['max_flaps_per_endpoint_10min'], '{}'):>5} "
                f"{_mark(t['capacity_violations'], '{}'):>4}")
            for name in TARGETS:
                if "lost" in t[name]:
                    notes.append(f"  seed {r['seed']} {name}: {describe_loss(t[name])}")
        goodput, ratio = summary["median_goodput_per_accel_hour"], summary["median_ratio"]
        lines.append(f"{'med':>4} {_m(goodput[POLICY]):>8} {_m(goodput['best_baseline']):>22} "
                     f"{_m(goodput[ORACLE]):>8} {_m(goodput['upper_bound']):>8} "
                     f"{ratio['vs_best_baseline'] or '-':>6} {ratio['vs_oracle'] or '-':>7}")
        attained = summary["median_interactive_slo_attainment"]
        lines.append("median interactive SLO attainment: " + ", ".join(
            f"{name} {value:.2%}" for name, value in attained.items() if value is not None))
        lines.append("targets met: " + ", ".join(
            f"{name} {count}" for name, count in summary["targets_met"].items()))
        if notes:
            lines.append("where a target was missed, what the policy lost (vs its reference):")
            lines += notes
    lines += ["", "* marks a missed target; the oracle is a hindsight schedule run in the "
              + "simulator (achievable), the bound its relaxation (an upper bound)."]
    return "\n".join(lines)


def _m(tokens: float | None) -> str:
    return "-" if tokens is None else f"{tokens / 1e6:.2f}"


def _mark(check: dict[str, Any], fmt: str = "{:.2f}") -> str:
    value = check["value"]
    text = "-" if value is None else fmt.format(value)
    return text + ("*" if check["met"] is False else "")
