"""Discrete-time simulator: the partition policy against per-endpoint baselines and an oracle."""

from autoscaling.simulate.engine import EngineProfile
from autoscaling.simulate.scenarios import SCENARIOS, World, build_world

__all__ = ["SCENARIOS", "World", "build_world", "simulate"]


def simulate(scenario: str, *, seed: int = 0, endpoints: int = 12, accelerators: float = 24,
             hours: float = 1.0, engine: str | EngineProfile = "h100-llama-8b",
             plot: str | None = None) -> dict:
    """Run every controller on one world and return the report dictionary (report.report).
    engine: a built-in profile's name, or a profile (e.g. calibrated.load_calibrated's)."""
    import time

    from autoscaling.simulate.engine import PROFILES
    from autoscaling.simulate.report import plot_allocation, report
    from autoscaling.simulate.run import run_all

    started = time.perf_counter()
    profile = PROFILES[engine] if isinstance(engine, str) else engine
    world = build_world(scenario, seed=seed, endpoints=endpoints, accelerators=accelerators,
                        hours=hours, profile=profile)
    runs, bound = run_all(world)
    result = report(world, runs, bound, time.perf_counter() - started)
    if plot:
        plot_allocation(world, runs, plot)
    return result
