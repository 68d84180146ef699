"""The engine profile: fits, cold-start phases, the file's checks, and the simulator reading it.
No engine here: the measuring run itself is tests/engine/test_profile_command.py."""

from __future__ import annotations

import json
import math

import pytest

from autoscaling.profile.fit import (
    PHASES,
    LineFit,
    cold_start_phases,
    fit_line,
    medians,
    vllm_log_figures,
)
from autoscaling.profile.run import Plan, assemble
from autoscaling.profile.schema import (
    MAX_FILE_BYTES,
    ProfileError,
    load_profile,
    parse_profile,
)
from autoscaling.simulate.calibrated import calibrate, load_calibrated
from autoscaling.simulate.engine import PROFILES

# -- fits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("points", "intercept", "slope"), [
    ({1: 3.0, 2: 5.0, 3: 7.0}, 1.0, 2.0),  # exactly 1 + 2x
    ({16: 0.0125, 128: 0.0359, 256: 0.0638}, 0.008887, 0.00021385),  # a measured prefill
    ({1: 6.0, 8: 5.0}, 5.5, 0.0),  # falls with x: flat at the median
    ({10: 1.0, 20: 3.0}, 0.0, 0.14),  # -1 + 0.2x: through the origin, 70 / 500
    ({1: 2.0, 3: 2.0, 5: 2.0}, 2.0, 0.0),  # flat
])
def test_fit_line(points, intercept, slope):
    fit = fit_line(points)
    assert fit.intercept == pytest.approx(intercept, rel=1e-3, abs=1e-9)
    assert fit.slope == pytest.approx(slope, rel=1e-3, abs=1e-12)
    assert 0.0 <= fit.r2 <= 1.0


def test_a_line_needs_two_points():
    with pytest.raises(ValueError, match="two points"):
        fit_line({8: 1.0})


def test_medians_take_the_middle_repeat_per_size_in_order():
    assert medians({8: [3.0, 1.0, 2.0], 1: [5.0, 4.0]}) == {1: 4.5, 8: 2.0}


def test_line_fit_evaluates():
    assert LineFit(1.0, 0.5, 1.0)(4) == 3.0


# -- cold start ------------------------------------------------------------------------------

LOG = """\
(Worker pid=9110) INFO 12-04 13:05:02 [base_loader.py:82] Initializing model took 0.432355 seconds
(Worker pid=9110) INFO 12-04 13:05:02 [default_loader.py:501] Loading weights took 0.02 seconds
(EngineCore pid=9031) INFO 12-04 13:05:03 [kv_cache_utils.py:2327] CPU KV cache size: 262,144 \
tokens, Maximum concurrency for 512 tokens per request: 512.00x
(EngineCore pid=9031) INFO 12-04 13:05:03 [core.py:402] init engine (profile, create kv cache, \
warmup model) took 0.15 s
"""
MARKS = {"started": 0.4, "imported": 22.0, "configured": 41.0, "engine_ready": 72.5,
         "first_token": 72.6}


def test_vllm_log_figures():
    assert vllm_log_figures(LOG) == {"model_init": 0.432355, "weights_read": 0.02,
                                     "kv_cache": 0.15, "kv_cache_tokens": 262_144.0}
    assert vllm_log_figures("nothing of the kind") == {}


def test_cold_start_phases_split_the_engine_span_by_vllm_own_timings():
    phases = cold_start_phases(0.0, MARKS, vllm_log_figures(LOG))
    assert tuple(phases) == PHASES
    # engine process = (72.5 - 41) - (0.432 + 0.02) - 0.15 = 30.898
    assert phases == pytest.approx({
        "process": 0.4, "imports": 21.6, "engine config": 19.0, "engine process": 30.898,
        "weights": 0.452, "kv cache": 0.15, "first token": 0.1}, abs=1e-3)
    assert sum(phases.values()) == pytest.approx(72.6)  # launch to first token


def test_without_vllm_timings_the_engine_span_is_one_phase():
    phases = cold_start_phases(0.0, MARKS, {})
    assert phases["engine process"] == pytest.approx(31.5)
    assert phases["weights"] == phases["kv cache"] == 0.0


@pytest.mark.parametrize(("marks", "error"), [
    ({k: v for k, v in MARKS.items() if k != "configured"}, "missing phase marks: configured"),
    ({**MARKS, "imported": 50.0}, "out of order"),
])
def test_cold_start_phases_refuse_broken_marks(marks, error):
    with pytest.raises(ValueError, match=error):
        cold_start_phases(0.0, marks, {})


# -- the file --------------------------------------------------------------------------------

MACHINE = {"accelerator": "cpu", "cpu_model": "a test CPU", "cores": 2, "usable_cores": 2,
           "memory_bytes": 24 * 2**30, "gpu_model": None, "platform": "Linux",
           "python": "3.11", "vllm_version": "0.32.0", "torch_version": "2.13.0"}
RAW = {"phases": MARKS,
       "prefill": {"16": [0.0133, 0.0125, 0.0122], "128": [0.0362, 0.0359, 0.0345],
                   "256": [0.0644, 0.0638, 0.0625]},
       "decode": {"1": [0.0060, 0.0054, 0.0051], "4": [0.0065, 0.0061, 0.0062],
                  "8": [0.0073, 0.0072, 0.0074]},
       "kv_cache": {"blocks": 2048, "block_size": 128}, "max_num_seqs": 128,
       "max_model_len": 512}
PLAN = Plan(model="/models/demo", engine_args={"max_model_len": 512, "enforce_eager": True},
            prompt_lengths=(16, 128, 256), batch_sizes=(1, 4, 8))


def profile_data() -> dict:
    profile = assemble(PLAN, RAW, LOG, launched=0.0, finished=90.0,
                       load={"before": 0.5, "mean": 1.0, "max": 1.5, "after": 0.8},
                       machine=MACHINE)
    return json.loads(profile.to_json())


def test_assemble_fits_the_medians_and_sums_the_phases():
    data = profile_data()
    assert data["schema"] == "aifactory.engine-profile" and data["schema_version"] == 1
    # decode medians 5.4, 6.2, 7.3 ms at 1, 4, 8: least squares 5.13 + 0.271 x ms
    assert data["fitted"]["decode_step"]["intercept_s"] == pytest.approx(5.13e-3, rel=1e-2)
    assert data["fitted"]["decode_step"]["slope_s"] == pytest.approx(0.271e-3, rel=1e-2)
    assert data["fitted"]["cold_start_s"] == pytest.approx(72.6, abs=1e-2)
    assert data["measured"]["kv_cache"]["tokens"] == 262_144
    assert data["run"]["date"] == "1970-01-01T00:00:00Z"


def test_a_profile_round_trips_through_its_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile_data()))
    profile = load_profile(path)
    assert profile.measured.prefill_s[128] == [0.0362, 0.0359, 0.0345]
    assert profile.machine.cpu_model == "a test CPU"


def _with(change) -> str:
    data = profile_data()
    change(data)
    return json.dumps(data)


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return change


@pytest.mark.parametrize(("text", "error"), [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("[1, 2]", "a JSON object, not list"),
    ('{"schema": "something else"}', "not an engine profile"),
    (_with(_set("schema_version", 2)), "schema_version 2; this version reads 1"),
    (_with(_set("fitted.decode_step.slope_s", -0.001)), "fitted.decode_step.slope_s"),
    (_with(_set("fitted.cold_start_s", 0)), "fitted.cold_start_s"),
    (_with(_set("fitted.prefill.intercept_s", 1e9)), "fitted.prefill.intercept_s"),
    (_with(_set("fitted.prefill.intercept_s", "fast")), "fitted.prefill.intercept_s"),
    (_with(_set("measured.decode_step_s", {"1": [0.005]})), "measured.decode_step_s"),
    (_with(_set("measured.prefill_s.16", [])), "between 1 and 1000 repeats"),
    (_with(_set("measured.kv_cache.tokens", 7)), "blocks x block_size"),
    (_with(_set("measured.cold_start_s", {"process": 1.0})), "missing phases"),
    (_with(_set("machine.cores", 0)), "machine.cores"),
    (_with(_set("engine.engine_args", {"--model": "/etc"})), "engine.engine_args"),
    (_with(_set("extra", 1)), "extra: Extra inputs are not permitted"),
    (_with(_set("fitted.decode_step", {"intercept_s": 0.0, "slope_s": 0.0, "r2": 1.0})),
     "a step must take time"),
])
def test_a_malformed_profile_is_refused_naming_the_field(text, error):
    with pytest.raises(ProfileError, match=error):
        parse_profile(text, "p.json")


def test_a_line_through_the_origin_is_a_valid_fit():
    parse_profile(_with(_set("fitted.decode_step.intercept_s", 0.0)))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_profile_with_a_non_number_is_refused(constant):
    text = _with(_set("fitted.cold_start_s", "X")).replace('"X"', constant)
    with pytest.raises(ProfileError, match=f"not JSON: {constant} is not a number"):
        parse_profile(text)


def test_a_hostile_profile_is_refused_before_it_is_parsed(tmp_path):
    with pytest.raises(ProfileError, match="more than a profile's"):
        parse_profile(" " * (MAX_FILE_BYTES + 1))
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ProfileError):
        parse_profile(deep[:MAX_FILE_BYTES])
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * MAX_FILE_BYTES + b"}")
    with pytest.raises(ProfileError, match="more than a profile's"):
        load_profile(big)
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path)  # a folder


# -- the simulator reading it ------------------------------------------------------------------


def test_calibration_takes_the_fits_and_keeps_the_serving_defaults(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(profile_data()))
    base = PROFILES["cpu-tiny-llama"]
    engine = load_calibrated(path)  # a CPU measurement calibrates the CPU profile
    assert engine.name == "cpu-tiny-llama calibrated by cpu.json"
    assert engine.decode_step_base_s == pytest.approx(5.13e-3, rel=1e-2)
    assert engine.cold_start_s == pytest.approx(72.6, abs=1e-2)
    assert (engine.ttft_slo_s, engine.target_ongoing_per_replica, engine.prompt_tokens) == (
        base.ttft_slo_s, base.target_ongoing_per_replica, base.prompt_tokens)
    # An idle replica's simulated TTFT (prefill + one decode step) is the measured one.
    file = load_profile(path)
    for prompt in (16, 128, 256):
        simulated = engine.prefill_s(prompt) + engine.decode_step_s(1)
        assert simulated == pytest.approx(
            file.fitted.prefill.intercept_s + file.fitted.prefill.slope_s * prompt, rel=1e-9)
    # The KV cache holds 262,144 / (128 + 256) = 682 of the longest requests: max_num_seqs 128.
    assert engine.max_num_seqs == 128
    assert load_calibrated(path, "h100-llama-8b").ttft_slo_s == PROFILES["h100-llama-8b"].ttft_slo_s


def test_a_small_kv_cache_caps_the_running_sequences():
    data = profile_data()
    data["measured"]["kv_cache"] = {"blocks": 10, "block_size": 128, "tokens": 1280}
    engine = calibrate(PROFILES["cpu-tiny-llama"], parse_profile(json.dumps(data)), "x")
    assert engine.max_num_seqs == 3  # 1,280 // (128 + 256)


def test_a_flat_prefill_fit_still_gives_a_finite_rate():
    data = profile_data()
    data["fitted"]["prefill"] = {"intercept_s": 0.01, "slope_s": 0.0, "r2": 1.0}
    engine = calibrate(PROFILES["cpu-tiny-llama"], parse_profile(json.dumps(data)), "x")
    assert math.isfinite(engine.prefill_tokens_per_s)


def test_the_simulator_command_refuses_a_bad_profile_with_one_line(tmp_path, capsys):
    from autoscaling.simulate.__main__ import parse_args

    bad = tmp_path / "bad.json"
    bad.write_text(_with(_set("fitted.decode_step.slope_s", float("nan"))))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--profile", str(bad)])
    assert exit_info.value.code == 2
    assert "--profile" in capsys.readouterr().err


def test_the_simulator_runs_on_a_calibrated_profile(tmp_path):
    from autoscaling.simulate import simulate

    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(profile_data()))
    result = simulate("steady", endpoints=4, accelerators=4, hours=0.05,
                      engine=load_calibrated(path))
    assert result["engine"] == "cpu-tiny-llama calibrated by cpu.json"
    assert result["policies"]["partition"]["capacity_violations"] == 0
