"""Engine model for the simulator: measured and published profiles, and a fluid batch model.

Each endpoint's replicas are modelled together as a fluid, one time step (default 1 s) at a
time, vectorised over endpoints with numpy: requests queue (FIFO), are admitted into the
running batch up to max_num_seqs per ready replica and a prefill budget, and decode at a
step time that grows linearly with the batch,

    decode_step(b) = decode_step_base_s + decode_step_per_seq_s * b.

Prefill takes a share u of a replica's time (admitted prompt tokens / prefill throughput),
so tokens come out every decode_step(b) / (1 - u): that is the step's inter-token latency.
A request's TTFT is its queueing time (exact per request, from the FIFO arrival index)
plus its own prefill and one decode step. Its ITL is taken as the step ITL when it is
admitted: requests live a few seconds, so this is a simplification, not an exact per-token
record. Clients abandon requests still queued after CLIENT_TIMEOUT_S (batch work, given an
infinite timeout, waits), except those that arrived while their endpoint had no ready
replica: the platform holds those for the endpoint's wake, up to WAKE_TIMEOUT_S, as the live
gateway does (autoscaler.wake_timeout_s), and they are served late rather than lost. New
replicas become ready cold_start_s after they are asked for; a failed replica stops at once,
and the requests it ran are lost.

In front of the engines, the platform's gateway refuses newcomers to a standing queue, or
while the running requests' tokens come too slowly (gateway.py): refused requests never
enter the FIFO, and `cumulative` counts the accepted.

Replicas are independent accelerators unless a profile says they share a host, as the slots
of a CPU partition share its cores: then a replica that starts while others serve takes
cold_start_beside_load_s, and while any replica starts, every serving replica's steps take
step_slowdown_while_starting times as long (both measured on the live platform by
benchmarks/simulator_vs_live.py; on GPU nodes they are left unset).

Profiles
--------
cpu-tiny-llama: measured on this project's CPU machine (2-layer tiny Llama on vLLM CPU):
    single-stream decode TPOT p50 ~1.7 ms, TTFT p50 ~8 ms for a 128-token prompt,
    ~3,400 output tok/s at batch 16, engine start ~26 s. Hence base + per_seq = 1.7 ms and
    16 / (base + 16 per_seq) = 3,400/s: per_seq ~0.20 ms, base ~1.50 ms; prefill ~128 tokens
    in 8 - 1.7 = 6.3 ms, ~20,000 tok/s. Batches above 16 were not measured (extrapolated).
h100-llama-8b: approximate published figures for Llama-3.1-8B (bf16) on one H100 with vLLM,
    rounded from the ranges reported by the vLLM team's blog post "vLLM v0.6.0: 2.7x
    Throughput Improvement and 5x Latency Reduction" (Sept 2024, Llama-3-8B on 1xH100),
    Lambda's "vllm-benchmark" report (A100 vs H100, vLLM 0.6) and NVIDIA's NIM LLM
    benchmarking pages for Llama-3.1-8B-Instruct on H100: decode TPOT ~7 ms at batch 1 and
    ~15 ms at batch 64 (~4,300 output tok/s), prefill ~20,000 tok/s (TTFT ~50 ms for a
    1,000-token prompt at low load). They are not re-measured here; read them as the right
    order of magnitude, not as exact values. The 90 s cold start (weights from local disk,
    CUDA graph capture) is an assumption, not a published figure.
Fractional replicas (replica_cost 0.25 or 0.5) reuse their accelerator type's profile: a
model proportionally smaller on a proportional slice of the accelerator has about the same
step times. That is a derivation, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoscaling.simulate.gateway import Gateway

# Prefill may take at most this share of a replica's step, so decoding never starves.
PREFILL_SHARE_MAX = 0.8
# A client waits this long for its first token, then disconnects (vLLM aborts the request).
CLIENT_TIMEOUT_S = 60.0
# A request for an endpoint with no ready replica is held this long for its wake (the live
# platform's default autoscaler.wake_timeout_s), then refused.
WAKE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class EngineProfile:
    """Step-time model of one replica, plus the serving defaults that go with it."""

    name: str
    decode_step_base_s: float
    decode_step_per_seq_s: float
    prefill_tokens_per_s: float
    max_num_seqs: int
    cold_start_s: float
    target_ongoing_per_replica: float
    ttft_slo_s: float
    itl_slo_s: float
    prompt_tokens: tuple[int, ...]  # an endpoint's prompt length is drawn from these
    output_tokens: tuple[int, ...]
    # A prompt's latency before its first decode step beyond prompt / prefill_tokens_per_s
    # (front end, scheduling): 0 in the built-in profiles, fitted from a measured profile
    # (autoscaling.simulate.calibrated). Latency only: it takes no share of the replica.
    prefill_base_s: float = 0.0
    # What a new request's first token waits per request already running on its replica
    # beyond the decode step (a serving front end's per-stream work): 0 in the built-in
    # profiles, fitted from TTFT by concurrency through a live gateway
    # (benchmarks/simulator_vs_live.py). Latency only, like prefill_base_s.
    first_token_per_running_s: float = 0.0
    # Replicas sharing one host (a CPU partition's slots): the start of a replica while
    # others serve requests, and the factor on serving replicas' step times while any
    # replica starts. None and 1.0 (the built-in profiles): independent accelerators.
    cold_start_beside_load_s: float | None = None
    step_slowdown_while_starting: float = 1.0

    def prefill_s(self, prompt: float) -> float:
        """Latency of a prompt's prefill on an idle replica."""
        return self.prefill_base_s + prompt / self.prefill_tokens_per_s

    def decode_step_s(self, batch: float) -> float:
        return self.decode_step_base_s + self.decode_step_per_seq_s * batch

    def replica_requests_per_s(self, prompt: float, output: float) -> float:
        """Requests per second one replica completes with a batch of its target concurrency.

        Each request costs prompt / prefill throughput of the replica's time, plus its share
        of the decode steps: output * decode_step(batch) / batch.
        """
        batch = self.target_ongoing_per_replica
        seconds = prompt / self.prefill_tokens_per_s + output * self.decode_step_s(batch) / batch
        return 1.0 / seconds


def _from_two_points(tpot_1: float, batch: int, tokens_per_s: float) -> tuple[float, float]:
    """(base, per_seq) of the linear step model through TPOT at batch 1 and throughput at batch."""
    per_seq = (batch / tokens_per_s - tpot_1) / (batch - 1)
    return tpot_1 - per_seq, per_seq


_CPU_BASE, _CPU_PER_SEQ = _from_two_points(1.7e-3, 16, 3_400.0)
_H100_BASE, _H100_PER_SEQ = _from_two_points(7e-3, 64, 64 / 15e-3)

PROFILES: dict[str, EngineProfile] = {
    "h100-llama-8b": EngineProfile(
        name="h100-llama-8b",
        decode_step_base_s=_H100_BASE,
        decode_step_per_seq_s=_H100_PER_SEQ,
        prefill_tokens_per_s=20_000.0,
        max_num_seqs=256,
        cold_start_s=90.0,
        target_ongoing_per_replica=64.0,
        ttft_slo_s=1.0,
        itl_slo_s=0.05,
        prompt_tokens=(256, 512, 1024),
        output_tokens=(128, 256, 512),
    ),
    "cpu-tiny-llama": EngineProfile(
        name="cpu-tiny-llama",
        decode_step_base_s=_CPU_BASE,
        decode_step_per_seq_s=_CPU_PER_SEQ,
        prefill_tokens_per_s=128 / (8e-3 - 1.7e-3),
        max_num_seqs=64,
        cold_start_s=26.0,
        target_ongoing_per_replica=16.0,
        ttft_slo_s=0.5,
        itl_slo_s=0.02,
        prompt_tokens=(128,),
        output_tokens=(64, 128, 256),
    ),
}


@dataclass(frozen=True)
class StepOutcome:
    """What one fluid step did, per endpoint."""

    admitted: np.ndarray  # requests that got their first token this step
    good: np.ndarray  # of those, requests meeting both TTFT and ITL targets
    ttft_worst_s: np.ndarray  # TTFT of the oldest request admitted (0 when none)
    itl_s: np.ndarray  # inter-token latency of this step (0 when idle)
    # Requests lost this step, by how: given up in the queue, first token late, tokens slow.
    timed_out: np.ndarray
    late: np.ndarray
    slow: np.ndarray
    oldest_step: np.ndarray  # arrival step of the oldest request admitted (the late ones')
    service_s: np.ndarray  # a request's TTFT beyond its queueing: own prefill + one step
    refused: np.ndarray  # arrivals of this step refused by the gateway (a standing line)


class FluidEngines:
    """The replicas and queues of every endpoint of a partition, advanced one step at a time."""

    def __init__(
        self,
        profile: EngineProfile,
        prompt_tokens: np.ndarray,
        output_tokens: np.ndarray,
        ttft_slo_s: np.ndarray,
        itl_slo_s: np.ndarray,
        cumulative_arrivals: np.ndarray,
        initial_replicas: np.ndarray,
        dt: float,
        timeout_s: np.ndarray | None = None,
        gateway_slots: np.ndarray | None = None,
    ) -> None:
        count = len(prompt_tokens)
        self.profile = profile
        self.dt = dt
        self.columns = np.arange(count)
        self.prompt = prompt_tokens.astype(float)
        self.output = output_tokens.astype(float)
        self.ttft_slo = ttft_slo_s.astype(float)
        self.itl_slo = itl_slo_s.astype(float)
        # [step + 1, endpoint]: arrivals before step, as offered, and as accepted (less the
        # refused; written one row per step, so rows beyond the current step are stale).
        self.offered = cumulative_arrivals
        self.cumulative = cumulative_arrivals.copy()
        self.refused = np.zeros(count, dtype=cumulative_arrivals.dtype)
        # No gateway_slots: no gateway, nothing refused.
        self.gateway = None if gateway_slots is None else Gateway(
            gateway_slots, self.ttft_slo, self.itl_slo,
            np.ones(count, dtype=bool) if timeout_s is None else np.isfinite(timeout_s), dt)
        self.cold_steps = max(1, round(profile.cold_start_s / dt))
        beside = profile.cold_start_beside_load_s
        self.cold_steps_beside_load = (self.cold_steps if beside is None
                                       else max(1, round(beside / dt)))
        self.longest_start_steps = max(self.cold_steps, self.cold_steps_beside_load)
        self.ring = np.zeros((self.longest_start_steps + 1, count), dtype=np.int64)
        self.ready = initial_replicas.astype(np.int64).copy()
        self.starting = np.zeros(count, dtype=np.int64)
        self.running = np.zeros(count)
        self.waiting = np.zeros(count)
        self.admitted_total = np.zeros(count)  # FIFO index of the last request to leave the queue
        self.head_step = np.zeros(count, dtype=np.int64)  # arrival step of the queue's head
        self.preempted = np.zeros(count)  # cut off by a scale-down
        self.failed = np.zeros(count)  # cut off by a replica failure
        self.abandoned = np.zeros(count)
        self.timeout_steps = max(1, round(CLIENT_TIMEOUT_S / dt))
        # Per-endpoint timeouts (batch work waits for ever) only when some differ.
        self.timeouts: np.ndarray | None = None
        if timeout_s is not None and np.any(timeout_s != CLIENT_TIMEOUT_S):
            steps = np.where(np.isfinite(timeout_s), np.round(timeout_s / dt), 2**62)
            self.timeouts = np.maximum(steps, 1).astype(np.int64)
        timeouts = self.timeouts if self.timeouts is not None else self.timeout_steps
        self.wake_steps = np.broadcast_to(
            np.maximum(timeouts, max(1, round(WAKE_TIMEOUT_S / dt))), count).astype(np.int64)
        # FIFO index up to which requests arrived while their endpoint had no ready replica
        # (held for its wake): arrivals before the last step it had none.
        self.held_until = np.zeros(count)
        self.serving_held = np.zeros(count, dtype=bool)
        self.mean_running = np.zeros(count)  # time-averaged over the last step: the gauge
        self.itl = np.zeros(count)  # the last step's inter-token latency (0: idle)
        self._prefill_s = profile.prefill_base_s + self.prompt / profile.prefill_tokens_per_s
        self._prefill_rate = profile.prefill_tokens_per_s * dt

    @property
    def held(self) -> np.ndarray:
        """Replicas holding accelerators: ready or starting."""
        return self.ready + self.starting

    def scale_to(self, targets: np.ndarray, step: int) -> None:
        """Start or stop replicas so that ready + starting equals targets."""
        delta = targets.astype(np.int64) - self.held
        grow = delta > 0
        if grow.any():
            # On a shared host a start beside serving replicas competes with them.
            serving = bool(np.any(self.running > 0))
            cold = self.cold_steps_beside_load if serving else self.cold_steps
            self.ring[(step + cold) % len(self.ring), grow] += delta[grow]
            self.starting[grow] += delta[grow]
        for endpoint in np.flatnonzero(delta < 0):
            self._stop(int(endpoint), int(-delta[endpoint]), step)

    def _stop(self, endpoint: int, count: int, step: int) -> None:
        # Cancel the youngest starting replicas first: they have cost the least.
        for back in range(len(self.ring) - 1):
            if count == 0 or self.starting[endpoint] == 0:
                break
            slot = (step + self.longest_start_steps - back) % len(self.ring)
            cancel = min(count, int(self.ring[slot, endpoint]))
            self.ring[slot, endpoint] -= cancel
            self.starting[endpoint] -= cancel
            count -= cancel
        if count:
            self.ready[endpoint] -= count
            # Running requests beyond what the remaining replicas hold are lost.
            room = self.ready[endpoint] * self.profile.max_num_seqs
            lost = max(0.0, self.running[endpoint] - room)
            self.running[endpoint] -= lost
            self.preempted[endpoint] += lost

    def fail(self, endpoint: int, count: int) -> int:
        """count ready replicas of endpoint crash: their share of the running requests is
        lost and their accelerators are free; the next target starts replacements. Returns
        how many failed (no more than were ready)."""
        count = min(count, int(self.ready[endpoint]))
        if count > 0:
            lost = float(self.running[endpoint]) * count / float(self.ready[endpoint])
            self.ready[endpoint] -= count
            self.running[endpoint] -= lost
            self.failed[endpoint] += lost
        return count

    def step(self, step: int) -> StepOutcome:
        """Advance every endpoint by one step of dt seconds."""
        profile, dt = self.profile, self.dt
        slot = step % len(self.ring)
        matured = self.ring[slot]
        if matured.any():
            self.ready += matured
            self.starting -= matured
            self.ring[slot] = 0

        cumulative = self.cumulative
        arrived = self.offered[step + 1] - self.offered[step]
        refused = np.zeros_like(arrived)
        if self.gateway is not None:
            self._advance_head(self.admitted_total, step)
            refused = np.where(self.gateway.refusing(self, step), arrived, 0)
        self.refused += refused
        cumulative[step + 1] = self.offered[step + 1] - self.refused
        self.waiting += arrived - refused
        # Clients give up after CLIENT_TIMEOUT_S and the engine aborts what they left: the
        # oldest waiting requests leave the queue unserved. Those held for a wake (older in
        # the FIFO than any that came once a replica was ready) wait up to WAKE_TIMEOUT_S;
        # until they have all expired or left, the younger wait behind them (served in
        # arrival order, they leave first).
        self.held_until = np.where(self.ready == 0, cumulative[step + 1], self.held_until)
        if self.timeouts is None:
            expired = cumulative[max(0, step + 1 - self.timeout_steps)]
        else:
            expired = cumulative[np.maximum(0, step + 1 - self.timeouts), self.columns]
        expired_held = cumulative[np.maximum(0, step + 1 - self.wake_steps), self.columns]
        expired = np.where(expired_held >= self.held_until, expired, expired_held)
        gone = np.maximum(expired - self.admitted_total, 0.0)
        if gone.any():
            self.admitted_total = self.admitted_total + gone
            self.waiting -= gone
            self.abandoned += gone
        replicas = self.ready.astype(float)
        active = replicas > 0
        per_replica = np.where(active, replicas, 1.0)
        # A start on a shared host slows every serving replica (1 on independent ones).
        slow = profile.step_slowdown_while_starting if self.starting.any() else 1.0
        prefill_rate = self._prefill_rate / slow

        slots = np.maximum(replicas * profile.max_num_seqs - self.running, 0.0)
        prefill_room = replicas * prefill_rate * PREFILL_SHARE_MAX / self.prompt
        admit = np.minimum(self.waiting, np.minimum(slots, prefill_room))
        before = self.admitted_total
        after = before + admit
        # Requests held for a wake are among those leaving the queue: their lateness is the
        # cold start's.
        self.serving_held = (admit > 0) & (before < self.held_until)
        self._advance_head(before, step)
        self.admitted_total = after
        self.waiting -= admit

        prefill_share = admit * self.prompt / (per_replica * prefill_rate)
        stretch = 1.0 / (1.0 - prefill_share)
        # Requests decode for an exponential time of mean output * itl, and itl depends on
        # the batch, which depends on how long requests stay: two passes settle it.
        carried = self.running
        batch = (carried + admit) / per_replica
        for _ in range(2):
            itl = (profile.decode_step_base_s + profile.decode_step_per_seq_s * batch) * (
                stretch * slow)
            rate = dt / (self.output * itl)  # steps' worth of lifetimes, k = dt / lifetime
            survive = np.exp(-rate)
            stay_carried = (1.0 - survive) / rate  # share of the step a carried request stays
            stay_admitted = (1.0 - stay_carried) / rate  # same, admitted uniformly in the step
            mean_running = carried * stay_carried + admit * stay_admitted
            batch = mean_running / per_replica
        itl = np.where(active, itl, 0.0)
        self.itl = itl
        self.mean_running = np.where(active, mean_running, 0.0)
        running = np.where(active, carried * survive + admit * stay_carried, carried)
        # A fluid never quite drains; below a hundredth of a request, call it drained.
        self.running = np.where(running < 0.01, 0.0, running)
        self.mean_running = np.where((running < 0.01) & (admit == 0), 0.0, self.mean_running)

        # TTFT = queueing + own prefill (stretched like decode) + one decode step (+ the
        # front end's share per running request, where a profile has one). A request
        # meets it iff it arrived at step >= cut; those are the youngest of the admitted.
        service = self._prefill_s * stretch * slow + itl
        if profile.first_token_per_running_s:
            service = service + profile.first_token_per_running_s * batch * slow
        budget = self.ttft_slo - service
        cut = np.clip(step - np.floor(budget / dt).astype(np.int64), 0, step)
        oldest_ok = np.maximum(before, cumulative[cut, self.columns])
        ttft_ok = np.where(budget >= 0, np.clip(after - oldest_ok, 0.0, admit), 0.0)
        good = np.where(itl <= self.itl_slo, ttft_ok, 0.0)
        ttft_worst = np.where(admit > 0, (step - self.head_step) * dt + service, 0.0)
        return StepOutcome(admitted=admit, good=good, ttft_worst_s=ttft_worst, itl_s=itl,
                           timed_out=gone, late=admit - ttft_ok, slow=ttft_ok - good,
                           oldest_step=self.head_step.copy(), service_s=service,
                           refused=refused)

    def _advance_head(self, admitted_before: np.ndarray, step: int) -> None:
        """Move each queue head to the arrival step of its oldest unadmitted request."""
        head, cumulative = self.head_step, self.cumulative
        moving = self.columns
        while len(moving):
            behind = ((cumulative[head[moving] + 1, moving] <= admitted_before[moving] + 1e-9)
                      & (head[moving] < step))
            moving = moving[behind]
            head[moving] += 1
