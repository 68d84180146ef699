"""Discrete-time simulator comparing the partition policy with per-endpoint Ray autoscalers."""

from autoscaling.simulate.scenarios import SCENARIOS, World, build_world

__all__ = ["SCENARIOS", "World", "build_world", "simulate"]


def simulate(scenario: str, *, seed: int = 0, endpoints: int = 12, accelerators: float = 24,
             hours: float = 1.0, engine: str = "h100-llama-8b", plot: str | None = None) -> dict:
    """Run both policies on one world and return the report dictionary (see report.report)."""
    import time

    from autoscaling.simulate.engine import PROFILES
    from autoscaling.simulate.report import plot_allocation, report
    from autoscaling.simulate.run import run_both

    started = time.perf_counter()
    world = build_world(scenario, seed=seed, endpoints=endpoints, accelerators=accelerators,
                        hours=hours, profile=PROFILES[engine])
    runs = run_both(world)
    result = report(world, runs, time.perf_counter() - started)
    if plot:
        plot_allocation(world, runs, plot)
    return result
