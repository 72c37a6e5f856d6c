"""Unit tests of MessagingLibrary.charts: valid, inlinable, escaped, small SVG with verdicts marked.

Nothing here asserts on how long rendering takes.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from MessagingLibrary import charts

SVG_NS = "{http://www.w3.org/2000/svg}"
NASTY = '<script>alert(1)</script> & "x"'
SPECTRUM = [(0, 0.010), (50, 0.050), (90, 0.120), (99, 0.300), (99.9, 0.600), (99.99, 0.900), (100, 1.200)]


def parse(svg: str) -> ET.Element:
    """The root element, after checking the string is one inlinable <svg> element."""
    assert isinstance(svg, str)
    assert svg.startswith("<svg"), svg[:80]
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return root


def text_of(svg: str) -> str:
    return " ".join(parse(svg).itertext())


def ids_of(svg: str) -> set[str]:
    return {element.get("id") for element in parse(svg).iter() if element.get("id")}


def spectrum(passed=True, **extra):
    return charts.latency_spectrum(
        [("run A", SPECTRUM)],
        thresholds=[{"percentile": 99.0, "value_s": 0.5, "label": "p99 ≤ 500 ms", "passed": passed, "samples": 15000}],
        **extra,
    )


def rate(failed=False, **extra):
    times = [i * 0.5 for i in range(20)]
    offered = [1000.0] * 20
    answered = [980.0 if not failed or t < 2 or t >= 5 else 620.0 for t in times]
    phases = [
        {"name": "warm-up", "start_s": 0.0, "end_s": 2.0, "target_rate": 1000.0},
        {"name": "peak", "start_s": 2.0, "end_s": 5.0, "target_rate": 1000.0, "failed": failed,
         "note": "achieved 0.62 < 0.9" if failed else ""},
        {"name": "cool-down", "start_s": 5.0, "end_s": 10.0, "target_rate": 1000.0},
    ]
    return charts.rate_over_time(times, offered, answered, phases=phases, **extra)


def steps(failed=False, **extra):
    rows = [
        {"offered": 100.0, "ratio": 1.0, "passed": True, "name": "step-1"},
        {"offered": 1000.0, "ratio": 0.97, "passed": True, "name": "step-2"},
        {"offered": 4000.0, "ratio": 0.7 if failed else 0.93, "passed": not failed, "name": "step-3"},
        {"offered": 8000.0, "ratio": 0.5, "passed": None, "name": "step-4"},
    ]
    return charts.rate_steps(rows, threshold=0.9, **extra)


def resources(failed=False, **extra):
    server = [(float(t), 80.0 + t, 20.0 + (t % 7)) for t in range(60)]
    client = [(float(t), 40.0 + t / 10, 50.0 + (t % 3)) for t in range(60)]
    return charts.resources_over_time(
        server, client, memory_limit_mb=180, memory_failed=failed,
        memory_limit_label="server growth limit 100 MB (baseline 80 MB)", **extra,
    )


def timeline(failed=False, **extra):
    kinds = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "answer_chunk", "final"]
    runs = [
        {
            "label": f"run r-{i} (c{i % 3})",
            "sent_s": 0.1,
            "events": [(0.2 + 0.1 * k, kind) for k, kind in enumerate(kinds)],
            "failed": failed and i == 1,
            "note": "no final answer" if failed and i == 1 else "",
        }
        for i in range(4)
    ]
    return charts.agent_timeline(runs, **extra)


def gaps(failed=False, **extra):
    values = [0.001 * (1 + i % 400) for i in range(2000)]
    return charts.gap_distribution(values, threshold_s=0.5, stall_s=1.0, passed=not failed, **extra)


def queue(failed=False, **extra):
    return charts.offline_queue(
        pushed=120, delivered=90, evicted=20, expired=3, refused=2 if failed else 7, capacity=100,
        policy="drop-oldest", failed=failed, note="5 lost" if failed else "", **extra,
    )


MAKERS = {
    "latency_spectrum": lambda failed, **kw: spectrum(passed=not failed, **kw),
    "rate_over_time": rate,
    "rate_steps": steps,
    "resources_over_time": resources,
    "agent_timeline": timeline,
    "gap_distribution": gaps,
    "offline_queue": queue,
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("failed", [False, True])
def test_every_chart_is_one_marked_inlinable_svg(name, failed):
    svg = MAKERS[name](failed, title="My chart")
    root = parse(svg)
    assert root.get("class") == "apex-chart"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "My chart"
    assert root.get("data-failed") == ("true" if failed else "false")
    assert root.find(f"{SVG_NS}title").text == "My chart"
    assert ("FAILED" in text_of(svg)) is failed
    assert "<script" not in svg and "<image" not in svg and "href=\"http" not in svg
    assert len(svg) < 60_000, f"{name}: {len(svg)} bytes"


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_titles_are_escaped_and_dollars_print_as_is(name):
    title = NASTY + " costs $5 and $x$"
    svg = MAKERS[name](False, title=title)
    assert "<script>" not in svg
    root = parse(svg)
    assert root.get("aria-label") == title
    assert title in text_of(svg)  # drawn as is (no mathtext) in the suptitle


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_two_charts_of_the_same_data_share_no_id(name):
    first, second = MAKERS[name](False), MAKERS[name](False)
    assert ids_of(first) and ids_of(second)
    assert not ids_of(first) & ids_of(second)
    # every reference points at an id of its own chart
    for svg in (first, second):
        refs = set(re.findall(r'(?:url\(#|href="#)([^")]+)', svg))
        assert refs <= ids_of(svg)


def test_dynamic_labels_are_escaped_everywhere():
    svgs = [
        charts.latency_spectrum([(NASTY, SPECTRUM)], thresholds=[{"percentile": 99, "value_s": 0.5, "label": NASTY}]),
        charts.rate_over_time([0.0, 1.0], [1.0, 1.0], [1.0, 1.0],
                              phases=[{"name": NASTY, "start_s": 0, "end_s": 1, "failed": True, "note": NASTY}]),
        charts.rate_steps([{"offered": 10.0, "ratio": 1.0, "passed": False, "name": NASTY}], threshold=0.9),
        charts.agent_timeline([{"label": NASTY, "sent_s": 0, "events": [(0.1, NASTY)], "failed": True, "note": NASTY}]),
        charts.offline_queue(pushed=3, delivered=3, policy=NASTY, failed=True, note=NASTY),
    ]
    for svg in svgs:
        assert "<script>" not in svg
        assert "<script>alert(1)</script>" in text_of(svg)


def test_latency_spectrum_axes_thresholds_and_verdicts():
    svg = spectrum(passed=False)
    text = text_of(svg)
    for tick in ("50%", "90%", "99%", "99.9%", "99.99%", "max"):
        assert tick in text
    assert "threshold p99 ≤ 500 ms (n=15000)" in text
    assert "latency (ms)" in text
    assert parse(svg).get("data-failed") == "true"
    inconclusive = charts.latency_spectrum([("a", SPECTRUM)], thresholds=[{"percentile": 99.9, "value_s": 0.25}])
    assert parse(inconclusive).get("data-failed") == "false"
    assert "threshold p99.9 ≤ 250 ms" in text_of(inconclusive)
    assert "FAILED" not in text_of(inconclusive)


def test_latency_spectrum_switches_to_log_scale_for_wide_ranges_without_scientific_ticks():
    wide = [(0, 0.0001), (50, 0.001), (99, 0.5), (100, 3.0)]
    text = text_of(charts.latency_spectrum([("wide", wide)]))
    assert "1,000" in text or "1" in text.split()
    assert not re.search(r"\de[+-]?\d|×10|10\^", text)


def test_threshold_and_limit_labels_carry_their_values():
    assert "threshold ≥ 0.9" in text_of(steps())
    text = text_of(gaps())
    assert "threshold p99 ≤ 500 ms" in text
    assert "stall 1,000 ms" in text
    assert "measured p99 =" in text
    assert "server growth limit 100 MB (baseline 80 MB)" in text_of(resources())
    assert "server memory limit 250 MB" in text_of(charts.resources_over_time([(0, 100, 5)], [], memory_limit_mb=250))
    assert "server memory limit 64 MB" in text_of(charts.resources_over_time([], [], memory_limit_mb=64))
    text = text_of(rate())
    assert "target 1,000 msg/s" in text and "rate (msg/s)" in text
    text = text_of(queue())
    assert "capacity 100 · policy drop-oldest" in text and "delivered 90" in text


def test_failed_things_say_what_failed():
    assert "FAILED: peak (achieved 0.62 < 0.9)" in text_of(rate(failed=True))
    assert "FAILED: no final answer" in text_of(timeline(failed=True))
    assert "FAILED: 5 lost" in text_of(queue(failed=True))
    assert "lost 5" in text_of(queue(failed=True))


def test_offline_queue_lost_messages_are_shown_but_the_verdict_is_the_callers():
    svg = charts.offline_queue(pushed=10, delivered=8)
    assert "lost 2" in text_of(svg)
    assert parse(svg).get("data-failed") == "false"
    assert "lost" not in text_of(charts.offline_queue(pushed=10, delivered=10))


def test_agent_timeline_draws_at_most_25_rows_and_names_unknown_kinds():
    runs = [{"label": f"run {i}", "sent_s": 0.0, "events": [(0.5, "agent_started"), (0.7, "surprise")]}
            for i in range(40)]
    text = text_of(charts.agent_timeline(runs))
    assert "25 of 40 runs shown" in text
    assert "run 24" in text and "run 25" not in text
    assert "other kind" in text and "agent started" in text


@pytest.mark.parametrize(
    "call",
    [
        lambda: charts.latency_spectrum([]),
        lambda: charts.latency_spectrum([("empty", [])]),
        lambda: charts.rate_over_time([], [], []),
        lambda: charts.rate_steps([], threshold=0.9),
        lambda: charts.resources_over_time([], []),
        lambda: charts.agent_timeline([]),
        lambda: charts.gap_distribution([]),
        lambda: charts.offline_queue(pushed=0, delivered=0),
    ],
)
def test_empty_input_draws_no_data(call):
    svg = call()
    assert "no data" in text_of(svg)
    assert parse(svg).get("data-failed") == "false"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: charts.latency_spectrum([("a", [(50, -0.1)])]), "negative latency"),
        (lambda: charts.latency_spectrum([("a", [(101, 0.1)])]), "percentiles must be within 0..100"),
        (lambda: charts.latency_spectrum([("a", [(50,)])]), "2-tuples"),
        (lambda: charts.latency_spectrum("nope"), "series must be a list"),
        (lambda: charts.latency_spectrum([("a", SPECTRUM)], thresholds=[{"percentile": 99}]), "value_s"),
        (lambda: charts.latency_spectrum([("a", SPECTRUM)], thresholds=[{"percentile": 99, "value_s": 1,
                                                                         "passed": "yes"}]), "passed"),
        (lambda: charts.rate_over_time([0, 1], [1], [1, 1]), "equal lengths"),
        (lambda: charts.rate_over_time([1, 0], [1, 1], [1, 1]), "ascending"),
        (lambda: charts.rate_over_time([0], [-1], [1]), "offered contains a negative value"),
        (lambda: charts.rate_over_time([0], [float("nan")], [1]), "NaN"),
        (lambda: charts.rate_over_time([0], [1], [1], phases=[{"name": "p", "start_s": 3, "end_s": 1}]),
         "end_s 1 is before start_s 3"),
        (lambda: charts.rate_steps([{"offered": 0, "ratio": 1}], threshold=0.9), "offered"),
        (lambda: charts.rate_steps([{"offered": 10, "ratio": -1}], threshold=0.9), "ratio"),
        (lambda: charts.rate_steps([], threshold=-1), "threshold"),
        (lambda: charts.resources_over_time([(0, 1)], []), "3-tuples"),
        (lambda: charts.resources_over_time([(-1, 1, 1)], []), "server samples"),
        (lambda: charts.resources_over_time([], [], memory_limit_mb=-5), "memory_limit_mb"),
        (lambda: charts.resources_over_time([], [], memory_failed="no"), "memory_failed"),
        (lambda: charts.agent_timeline([{"label": "r", "sent_s": -0.1}]), "sent_s"),
        (lambda: charts.agent_timeline([{"label": "r", "events": [(-1, "final")]}]), "time"),
        (lambda: charts.agent_timeline([{"label": "r", "events": ["final"]}]), "(t_s, kind) pair"),
        (lambda: charts.gap_distribution([0.1, -0.2]), "gaps_s contains a negative value"),
        (lambda: charts.gap_distribution([0.1], percentile=0), "percentile"),
        (lambda: charts.gap_distribution([0.1], threshold_s=-1), "threshold_s"),
        (lambda: charts.offline_queue(pushed=3, delivered=4), "exceeds pushed"),
        (lambda: charts.offline_queue(pushed=-1, delivered=0), "pushed"),
        (lambda: charts.offline_queue(pushed=2.5, delivered=0), "whole number"),
        (lambda: charts.svg_data_uri("not a chart"), "<svg>"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_decimate_keeps_extremes_ends_and_order():
    rng = np.random.default_rng(7)
    y = rng.normal(100, 5, 100_000)
    y[31_337], y[77_000] = 1_000.0, -500.0
    x = np.arange(len(y), dtype=float)
    dx, dy = charts._decimate(x, y)
    assert len(dx) <= charts.MAX_POINTS
    assert dy.max() == 1_000.0 and dy.min() == -500.0
    assert dx[0] == 0 and dx[-1] == len(y) - 1
    assert np.all(np.diff(dx) > 0)
    short = np.arange(10.0)
    assert charts._decimate(short, short)[0] is short


def tick(svg: str, label: str) -> tuple[float, str]:
    """The SVG y coordinate of the y-axis tick labelled ``label``, and its axes' clip path."""
    for group in parse(svg).iter(f"{SVG_NS}g"):
        if "ytick_" in (group.get("id") or "") and label in "".join(group.itertext()).split():
            grid_line = next(path for path in group.iter(f"{SVG_NS}path") if path.get("clip-path"))
            return float(next(group.iter(f"{SVG_NS}use")).get("y")), grid_line.get("clip-path")
    raise AssertionError(f"no y tick labelled {label}")


def reaches_above(svg: str, style: str, label: str) -> bool:
    """Whether a line drawn with ``style`` in the axes of tick ``label`` goes above that tick."""
    y_tick, clip = tick(svg, label)
    ys = [
        float(y)
        for path in parse(svg).iter(f"{SVG_NS}path")
        if path.get("clip-path") == clip and style in (path.get("style") or "")
        for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", path.get("d"))
    ]
    assert ys, f"no line drawn with {style}"
    return min(ys) < y_tick


def test_100k_point_inputs_stay_small_and_keep_their_maximum():
    n = 100_000
    rng = np.random.default_rng(3)
    times = (np.arange(n) * 0.01).tolist()
    answered = rng.uniform(900, 1000, n)
    answered[54_321] = 4_321.0
    svg = charts.rate_over_time(times, [1000.0] * n, answered.tolist())
    assert len(svg) < 150_000
    # the answered line (blue, 1.6) still reaches above the 4,000 msg/s tick: the spike survived
    assert reaches_above(svg, f"stroke: {charts.BLUE}; stroke-width: 1.6", "4,000")

    samples = [(t, 100.0 + (t % 5), 10.0 + (t % 20)) for t in (np.arange(n) * 0.1).tolist()]
    samples[66_666] = (samples[66_666][0], 950.0, 10.0)
    svg = charts.resources_over_time(samples, [])
    assert len(svg) < 150_000
    assert reaches_above(svg, f"stroke: {charts.BLUE}", "800")

    pct = np.linspace(0, 99.999, n)
    values = np.sort(rng.uniform(0.1, 0.2, n))
    values[-1] = 1.5
    svg = charts.latency_spectrum([("big", list(zip(pct.tolist(), values.tolist())))])
    assert len(svg) < 150_000
    assert reaches_above(svg, f"stroke: {charts.BLUE}", "1,400")

    svg = charts.gap_distribution(rng.exponential(0.01, n).tolist(), threshold_s=0.05)
    assert len(svg) < 150_000

    runs = [{"label": f"r{i}", "sent_s": 0.0, "events": [(j * 0.001, "answer_chunk") for j in range(4_000)]}
            for i in range(25)]
    svg = charts.agent_timeline(runs)
    assert len(svg) < 150_000
    assert "events marked (busy rows thinned)" in text_of(svg)


def test_svg_data_uri_round_trips():
    svg = queue()
    uri = charts.svg_data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode("utf-8") == svg


def test_rendering_leaves_global_matplotlib_state_alone():
    before = dict(matplotlib.rcParams)
    steps()
    assert dict(matplotlib.rcParams) == before


def test_pyplot_is_never_imported_and_the_backend_is_never_chosen():
    code = (
        "import sys, matplotlib\n"
        "backend = matplotlib.rcParams._get_backend_or_none()\n"
        "from MessagingLibrary import charts\n"
        "charts.rate_steps([{'offered': 1.0, 'ratio': 1.0}], threshold=0.9)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == backend\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_charts_can_be_rendered_from_several_threads():
    results: list[str] = []
    errors: list[BaseException] = []

    def work():
        try:
            results.append(gaps())
            results.append(spectrum())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(results) == 8
    for svg in results:
        parse(svg)
