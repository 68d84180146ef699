"""The live partition autoscaler on real engines: `quiet` idles down to zero, `burst` bursts
and borrows the freed slot, a request to `quiet` is held while it wakes, `burst` gives the
slot back; an endpoint created through the admin API borrows an idle slot and gives it
back like them; the controller survives its own restart with its state; and a flood
beyond the replicas up is refused rather than queued in the engine.

Two CPU slots fit two engine replicas; both configured endpoints are guaranteed one."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
import pytest

from tests.e2e_autoscaling.conftest import ADMIN_KEY
from tests.flood import flood, summary
from tests.platform_helpers import kill_serve_replica

BURST_STREAMS = 12
# More clients than one replica's 256 slots, fewer than the 512 of the two it may grow to.
FLOOD_WORKERS = 320
FLOOD_S = 20.0
FLOOD_TTFT_TARGET_MS = 200
CREATED_ENGINE = {"max_model_len": 512, "dtype": "bfloat16",
                  "kv_cache_memory_bytes": 134217728, "enforce_eager": True}


def autoscaler_view(platform) -> dict:
    response = httpx.get(f"{platform['url']}/admin/v1/autoscaler", params={"actions": 500},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def decision(view: dict, endpoint: str) -> dict:
    return next(d for d in view["endpoints"] if d["endpoint"] == endpoint)


def wait_for(platform, what: str, check, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        view = autoscaler_view(platform)
        if view["endpoints"] and check(view):
            return view
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout_s:.0f}s; last view: {view}")
        time.sleep(1)


class Burst:
    """`streams` clients streaming long completions from `model` until stopped."""

    def __init__(self, platform, key: str, model: str = "burst",
                 streams: int = BURST_STREAMS) -> None:
        self.model = model
        self.client = openai.OpenAI(base_url=platform["url"] + "/v1", api_key=key,
                                    max_retries=0, timeout=900)
        self.stop = threading.Event()
        self.finished = 0
        self.failed: list[str] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True)
                        for _ in range(streams)]

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                stream = self.client.completions.create(
                    model=self.model, prompt="a long story about the sea", max_tokens=200,
                    stream=True, extra_body={"ignore_eos": True})
                for _ in stream:
                    pass
                self.finished += 1
            except Exception as exc:  # a replica taken back mid-stream; counted, not hidden
                self.failed.append(repr(exc))

    def __enter__(self) -> Burst:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=300)


def test_burst_borrows_idle_share_and_gives_it_back(platform, acme_key):
    started = time.time()
    # Both start with one replica each; `quiet` has no demand and goes to zero.
    wait_for(platform, "quiet idle at zero replicas",
             lambda v: decision(v, "quiet")["target"] == 0
             and decision(v, "quiet")["current"] == 0, timeout_s=240)

    with Burst(platform, acme_key) as burst:
        # Twelve streams on one replica that carries four: `burst` wants three, may have
        # two: its own guaranteed one and `quiet`'s idle one, lent.
        view = wait_for(platform, "burst running two replicas",
                        lambda v: decision(v, "burst")["current"] == 2, timeout_s=600)
        assert decision(view, "burst")["target"] == 2
        assert view["allocated"] <= 2
        lent = [a for a in view["actions"] if a["endpoint"] == "burst" and a["target"] == 2]
        assert lent and lent[-1]["reason"] == "lent", view["actions"]

        # `quiet`'s demand returns: the request is held, not refused, while the slot is
        # taken back from `burst` and a `quiet` replica starts.
        client = openai.OpenAI(base_url=platform["url"] + "/v1", api_key=acme_key,
                               max_retries=0, timeout=900)
        asked = time.monotonic()
        answer = client.completions.create(model="quiet", prompt="hello", max_tokens=8)
        woke_in = time.monotonic() - asked
        assert answer.choices[0].text is not None
        assert answer.usage.completion_tokens > 0
        view = autoscaler_view(platform)
        assert burst.finished > 0

    print(f"\nquiet woke from zero in {woke_in:.1f}s; burst streams finished "
          f"{burst.finished}, failed {len(burst.failed)}")
    actions = [a for a in view["actions"] if a["at"] >= started]
    reclaimed = [a for a in actions if a["endpoint"] == "burst" and a["previous"] == 2
                 and a["target"] == 1]
    assert reclaimed and reclaimed[0]["reason"] == "reclaimed", actions
    woken = [a for a in actions if a["endpoint"] == "quiet" and a["previous"] == 0
             and a["target"] == 1]
    assert woken, actions
    # The slot went back in one decision: burst's reclaim and quiet's wake share a time.
    assert reclaimed[0]["at"] == woken[0]["at"]
    assert decision(view, "quiet")["target"] >= 1
    assert view["allocated"] <= 2


def test_a_created_endpoint_borrows_an_idle_slot_and_gives_it_back(platform, acme_key):
    """`popup`, created with no guarantee beside two endpoints guaranteed both slots and
    max_replicas adding up to 5 of 2, is admitted; asked while at zero, it borrows the slot
    `quiet` left idle and serves; a second creation (a redeploy of the created endpoints'
    application) leaves its target alone; its block is changed live, and once its load
    stops it gives the slot back."""
    admin = httpx.Client(base_url=platform["url"] + "/admin/v1", timeout=120,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
    started = time.time()
    wait_for(platform, "quiet idle at zero again",
             lambda v: decision(v, "quiet")["current"] == 0
             and decision(v, "quiet")["target"] == 0, timeout_s=180)
    popup = {"model": "builtin:demo", "replicas": 0, "engine": CREATED_ENGINE,
             "autoscaling": {"max_replicas": 1, "target_ongoing_per_replica": 4}}
    created = admin.post("/endpoints", json={"name": "popup", "owner": "acme",
                                             "deployment": popup})
    assert created.status_code == 201, created.text
    refused = admin.patch("/endpoints/popup/autoscaling", json={"guaranteed_replicas": 1})
    assert refused.status_code == 409, refused.text
    assert "2 of 2 are guaranteed to other endpoints" in refused.json()["error"]["message"]

    try:
        with Burst(platform, acme_key, model="popup", streams=2) as load:
            view = wait_for(platform, "popup borrowing the idle slot",
                            lambda v: any(d["endpoint"] == "popup" and d["current"] == 1
                                          for d in v["endpoints"]), timeout_s=300)
            woke_in = time.time() - started
            mine = decision(view, "popup")
            assert (mine["target"], mine["guaranteed"], mine["replica_cost"]) == (1, 0, 1)
            assert view["allocated"] <= 2
            # A second creation redeploys the created endpoints' application: Serve keeps
            # the target the controller set for popup (its deployment asked for 0).
            spare = admin.post("/endpoints", json={"name": "spare", "owner": "acme",
                                                   "deployment": popup})
            assert spare.status_code == 201, spare.text
            redeployed = time.monotonic()
            while time.monotonic() - redeployed < 6:
                assert decision(autoscaler_view(platform), "popup")["current"] == 1
                time.sleep(1)
            # Changed live: it idles to zero 5 s after its load stops (was 10 min).
            changed = admin.patch("/endpoints/popup/autoscaling", json={"idle_to_zero_s": 5})
            assert changed.status_code == 200, changed.text
        assert load.finished > 0 and not load.failed, load.failed
        stopped = time.monotonic()
        view = wait_for(platform, "popup giving its slot back",
                        lambda v: decision(v, "popup")["target"] == 0
                        and decision(v, "popup")["current"] == 0, timeout_s=120)
        gave_back_in = time.monotonic() - stopped
    finally:
        for name in ("popup", "spare"):
            admin.delete(f"/endpoints/{name}")
        admin.close()
    wait_for(platform, "deleted endpoints gone from the controller's view",
             lambda v: not {d["endpoint"] for d in v["endpoints"]} & {"popup", "spare"},
             timeout_s=60)
    print(f"\npopup served from zero {woke_in:.1f}s after the test began (quiet's idling "
          f"included); gave its slot back {gave_back_in:.1f}s after its load stopped")
    actions = sorted((a for a in view["actions"] if a["at"] >= started
                      and a["endpoint"] == "popup"), key=lambda a: a["at"])  # newest first
    assert [(a["previous"], a["target"]) for a in actions] == [(0, 1), (1, 0)], actions
    assert decision(view, "burst")["target"] == 1  # its guarantee, untouched throughout


def test_controller_restart_keeps_its_state(platform):
    before = wait_for(platform, "a decision", lambda v: True, timeout_s=60)
    targets = {d["endpoint"]: d["target"] for d in before["endpoints"]}
    kill_serve_replica("#autoscaler#")

    after = wait_for(platform, "a restarted controller deciding",
                     lambda v: v["controller"]["started_at"] > before["controller"]["started_at"],
                     timeout_s=120)
    assert after["controller"]["resumed_from_saved_state"] is True
    # Resumed from its saved state, the new controller keeps the targets it found.
    assert {d["endpoint"]: d["target"] for d in after["endpoints"]} == targets
    restarted_at = after["controller"]["started_at"]
    assert not [a for a in after["actions"] if a["at"] >= restarted_at], after["actions"]



def test_a_flood_beyond_the_replicas_up_is_refused_not_queued_in_the_engine(platform, acme_key):
    """`burst` may grow to 2 replicas of 256 requests (512 turns in the gateway) but has one
    up: 320 clients fill that one, the rest queue in its engine and first tokens come late.
    The gateway judges the queue against the replica up and refuses newcomers (503
    endpoint_overloaded, Retry-After) instead of sending them to wait there. Judged against
    the 512 turns of replicas not up, it refused none.

    Late is against the tenant's TTFT target, and how late 64 queued requests are depends on
    the machine: on the Intel machines one replica served this flood at TTFT p50 0.55 s and
    p95 0.93 s, timely for the default 2 s target (nothing to refuse), on the slower AMD ones
    at 2.7 s p95. So acme's target is 200 ms for the flood, late on either."""
    served, refused = flood_burst_at_one_replica(platform, acme_key,
                                                 {"ttft_p95_ms": FLOOD_TTFT_TARGET_MS})
    assert refused, "nothing refused: the queue was judged against replicas not up"


def test_a_flood_whose_tokens_come_too_slowly_is_refused(platform, acme_key):
    """The same flood with a TTFT target of a minute, which no queue here reaches, and an
    ITL target of 1 ms, which the streams of a replica running a quarter of its slots or
    more miss: the gateway reads the mean gap between their tokens and refuses newcomers
    (503 endpoint_overloaded) while it is past 0.8 of the target, so that the streams it
    runs keep their pace. Without that test nothing is refused."""
    served, refused = flood_burst_at_one_replica(platform, acme_key,
                                                 {"ttft_p95_ms": 60_000, "itl_p95_ms": 1})
    assert refused, "nothing refused: the streams' token gaps were not judged"


def flood_burst_at_one_replica(platform, acme_key, slo: dict) -> tuple[list, list]:
    """FLOOD_WORKERS clients stream from `burst` at one replica for FLOOD_S with acme's SLO
    targets set to `slo` (restored after): every request served or refused with 503
    endpoint_overloaded and Retry-After, none hung, dropped or broken. Returns (served,
    refused)."""
    from serving.tenancy import Store, default_database_url

    wait_for(platform, "burst at one replica", lambda v: decision(v, "burst")["current"] == 1,
             timeout_s=240)
    store = Store(default_database_url(platform["home"]))
    before = store.get_tenant("acme").slo_settings
    try:
        store.update_tenant("acme", slo=slo)
        time.sleep(2)  # the gateway reads a tenant again after a second (STORE_CACHE_TTL_S)
        results = asyncio.run(flood(platform["url"], acme_key, "burst", FLOOD_WORKERS,
                                    time.monotonic() + FLOOD_S))
    finally:
        store.update_tenant("acme", slo=before)
        store.close()
    errors = [r for r in results if isinstance(r, Exception)]
    refused = [r for r in results if not isinstance(r, Exception) and r[0] != 200]
    served = [r for r in results if not isinstance(r, Exception) and r[0] == 200]
    print(f"\nflood of burst at one replica, acme's targets {slo}: "
          f"{summary(results, FLOOD_S)}")
    assert not errors, errors[:3]  # no hang, drop or broken stream
    assert served and all(r[4] > 0 for r in served)
    assert {(r[0], r[2]) for r in refused} <= {(503, "endpoint_overloaded")}
    assert all(r[1] is not None for r in refused)  # Retry-After
    return served, refused
