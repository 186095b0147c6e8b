"""The live benchmark's report says, for 1,000 traders, which targets were met and by how
much each missed one was missed."""

from __future__ import annotations

from bench.live_report import Level, SignIn, _detail, connect_cpu, order_split, signins
from bench.live_support import calibrate
from bench.live_targets import TARGET_N, next_probe, targets, within_goal


def level(n: int, *, p99_ms: float, rendered_all_s: float | None) -> Level:
    latencies = [p99_ms] * 100  # every sample the same: that is the p99
    return Level(
        n=n,
        window_s=20,
        result={"samples": {"portfolio": latencies}, "expected": 200},
        cpu={"machine": 1.2, "stack": 0.9},
        orders=[("201", 50.0), ("201", 80.0), ("timeout", 10_000.0)],
        rendered_all_s=rendered_all_s,
    )


def test_each_target_is_met_or_missed_by_a_ratio() -> None:
    report = targets(
        [level(300, p99_ms=10, rendered_all_s=1), level(TARGET_N, p99_ms=500, rendered_all_s=None)]
    )
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in report.splitlines()
        if line.startswith("| ")
    }
    assert "missed by 2.0×" in rows["tick → socket p99"]  # 500 ms against 250
    assert rows["machine CPU"].endswith("| met |")  # 1.2 cores against 1.5
    assert "missed by 2.0×" in rows["price updates shown (of those due)"]  # 50 % against 99
    assert "missed by 1.5×" in rows["stack CPU per trader-second"]  # 0.9 ms against 0.6
    assert rows["order ack p99"].endswith("| met |")  # only answered orders are timed
    assert rows["every socket open and fully rendered"].endswith("| not measured |")


def test_the_largest_n_within_the_latency_goal_is_named_with_the_next_one_up() -> None:
    levels = [
        level(100, p99_ms=60, rendered_all_s=1),
        level(300, p99_ms=240, rendered_all_s=1),
        level(TARGET_N, p99_ms=380, rendered_all_s=9),
        level(1500, p99_ms=200, rendered_all_s=9),  # a lucky larger run counts too
    ]
    assert within_goal(levels) == (
        "The largest N of this run with a tick → socket p99 within 250 ms: 1,500 (200 ms), "
        "the largest run.\n\n"
    )
    assert within_goal(levels[:3]) == (
        "The largest N of this run with a tick → socket p99 within 250 ms: 300 (240 ms); "
        "the next, 1,000: 380 ms.\n\n"
    )
    assert within_goal(levels[2:3]).startswith("No N of this run kept")


def test_the_search_for_the_largest_n_within_the_goal_halves_the_gap_then_stops() -> None:
    def run(**p99s: float) -> list[Level]:
        return [level(int(n[1:]), p99_ms=ms, rendered_all_s=1) for n, ms in p99s.items()]

    assert next_probe(run(n100=60, n300=120, n1000=400), most=2000) == 650
    assert next_probe(run(n300=120, n1000=400, n650=200), most=2000) == 800
    assert next_probe(run(n650=200, n700=300), most=2000) is None  # within a tenth
    assert next_probe(run(n300=120, n1000=200), most=2000) == 1500  # none over: go up
    assert next_probe(run(n1000=200, n1800=240), most=2000) == 2000  # at most the seeded
    assert next_probe(run(n2000=200), most=2000) is None
    assert next_probe(run(n100=300, n300=900), most=2000) is None  # none within: nothing
    failed = run(n300=120)
    failed.append(Level(n=1000, window_s=20, failed="TimeoutError"))
    assert next_probe(failed, most=2000) == 650  # a failed level counts as over


def test_without_a_run_at_the_target_size_there_is_no_table() -> None:
    assert targets([level(300, p99_ms=10, rendered_all_s=1)]) == ""


def test_the_cpu_spent_connecting_is_per_trader_and_per_process() -> None:
    lv = level(1000, p99_ms=10, rendered_all_s=12)
    lv.connect_cpu = {"gateway": 4.0, "portfolio": 3.0, "postgres": 1.0, "loadgen": 2.5}
    lv.connect_cpu["machine"] = 12.0
    line = connect_cpu(lv)
    assert line.startswith("CPU while connecting: stack 8.0 s = 8.0 ms per trader")
    assert "gateway 4.0, portfolio 3.0, postgres 1.0, loadgen 2.5" in line
    assert "watchlist" not in line  # nothing spent, nothing named


def test_the_machine_speed_is_a_positive_cpu_time_and_reported() -> None:
    ms = calibrate(rounds=1)
    assert ms > 0
    lv = level(300, p99_ms=10, rendered_all_s=1)
    lv.result.update(
        rendered_s=[],
        connect_s=[1.0],
        open_start=300,
        open_end=300,
        handshake_errors=0,
        reconnects=0,
        closes={},
        unmatched=0,
        errors=[],
    )
    lv.calibration_ms = 87.4
    assert "a fixed Python workload took 87 ms of CPU" in _detail(lv)


def test_an_orders_time_is_split_between_the_gateway_and_the_orders_service() -> None:
    before = {"gateway": (10.0, 1.0), "orders": (10.0, 0.5)}
    after = {"gateway": (70.0, 10.0), "orders": (70.0, 4.1)}  # 60 orders: 150 and 60 ms
    assert order_split(before, after) == (
        "an order's HTTP time, mean: the gateway 150 ms, of which the orders service 60 ms "
        "(the gateway's share and the hop: 90 ms)"
    )
    assert order_split(before, {"gateway": (70.0, 10.0)}) is None  # orders did not answer
    assert order_split(before, before) is None  # no order in the window


def test_sign_ins_say_how_many_worked_their_times_and_the_placeholders_shown() -> None:
    done = [
        SignIn("ok", 120.0, 80.0, 0),
        SignIn("ok", 140.0, 600.0, 1),
        SignIn("login 503", 2_000.0),
        SignIn("timeout"),
    ]
    line = signins(done)
    assert line.startswith("sign-ins 2 of 4 ok ({'login 503': 1, 'timeout': 1}): login p50 ")
    assert "with 1 of 8 fragments as placeholders" in line
    assert "2,000" not in line  # a failed sign-in's time is not among the times
