"""Self-contained SVG charts for the Robot Framework log.html and the one-page HTML summary.

Every public function here is a *pure function of plain Python data* (lists, tuples, floats,
dicts): it takes numbers the keywords already measured and returns a ``str`` holding exactly
one ``<svg ...>`` element, ready to be inlined into HTML (``logger.info(svg, html=True)``) or
wrapped in an ``<img>`` with :func:`svg_data_uri`. Nothing is read from or written to disk,
nothing touches the network and no script is emitted.

Why matplotlib
==============

matplotlib is the best-kept Python charting library. Its SVG backend writes self-contained SVG
(no script, no external fonts, no network), and it has log-scale axes, tick locators and tick
formatters built in, which is most of what these charts need. We use only its
object-oriented API: a :class:`matplotlib.figure.Figure` with a
:class:`~matplotlib.backends.backend_svg.FigureCanvasSVG`. ``pyplot`` is never imported and
``matplotlib.use`` is never called, so importing this module changes nothing for anybody else
in the process.

Conventions (follow them when you add a chart)
==============================================

*Rendering* goes through :func:`_render`, which

- sets rcParams only inside ``matplotlib.rc_context`` (see :func:`_rc`):
  ``svg.fonttype: 'none'`` (text stays ``<text>``: small, searchable files),
  ``text.parse_math: False`` (a ``$`` in a label prints as is) and a fresh random
  ``svg.hashsalt`` per chart;
- holds a module lock while it does so: ``rc_context`` swaps the process-wide rcParams, so two
  Robot threads rendering at once would otherwise see each other's settings;
- strips the XML declaration and DOCTYPE, puts ``class="apex-chart"``, ``role="img"``,
  ``aria-label`` (the title, HTML-escaped) and ``data-failed="true|false"`` on the root
  ``<svg>`` and the title again as a ``<title>`` child;
- prefixes every ``id`` (and every ``#id`` reference) with a per-chart token. The hash salt
  alone makes matplotlib's *referenced* ids (clip paths, markers) unique, but its group ids
  (``figure_1``, ``axes_1``...) are counters that would repeat in every chart on a page;
- scopes matplotlib's one CSS rule (``*{stroke-linejoin...}``) to ``svg.apex-chart`` so an
  inlined chart does not style the rest of the page;
- drops the RDF metadata block (creator, date): smaller and reproducible.

*A builder* (the inner function handed to ``_render``) draws on the Figure and returns
``True`` when it marked anything failed; that becomes ``data-failed``.

*Escaping*: every dynamic string (titles, labels, legend entries, run names, notes) reaches the
SVG only as matplotlib text, which matplotlib XML-escapes itself; the only strings written by
hand (``aria-label``, ``<title>``) go through :func:`html.escape`.

*Size*: figures are about 7.5 x 3.2 inches; a line never has more than :data:`MAX_POINTS`
points (:func:`_decimate` keeps each bucket's min and max, so extremes survive);
:func:`_compact` rounds coordinates to 0.01 pt and hoists repeated marker styles. Typical
charts are 13-30 KB; a 25-run agent timeline about 55 KB; 100,000-point inputs stay well
under 150 KB. Rendering one chart takes roughly 0.1 s (the first in a process ~0.3 s).

*Units*: latency in ms, rates in msg/s, memory in MB, CPU in % of one core. Axes never use
scientific notation or offsets: :func:`_plain_axis` / :func:`_log_axis` install plain-number
formatters (``1,000``, ``0.25``) on every axis.

*Verdicts*: thresholds are dashed lines labelled in words with their value
(``threshold p99 ≤ 500 ms``). Failed things are red (:data:`RED`) and carry the word
``FAILED`` on the chart; passed things are green (:data:`GREEN`); inconclusive (``None``) ones
grey; plain data is blue/purple/orange/teal (never red or green, which mean verdicts). The
word ``FAILED`` (upper case) appears only in charts that mark a failure.

*Input*: bad input (wrong shape, negative durations, NaN, percentiles outside 0..100...)
raises :class:`ValueError` naming the argument and the problem. Empty-but-valid input (no
samples) draws the chart with "no data" instead of raising.

Adding a chart
==============

1. Check and convert the input first, outside the builder, with :func:`_array` (number
   lists, NaN and sign checks), :func:`_number`, :func:`_count`, :func:`_verdict`,
   :func:`_text`, :func:`_sequence` and :func:`_mapping`: they raise the ``ValueError``.
2. Write ``def build(fig) -> bool`` drawing on ``fig`` (``fig.add_subplot()``); handle the
   empty case with :func:`_no_data`; pass every line through :func:`_decimate`; put plain
   formatters on every axis; label thresholds in words with their values; draw failures in
   :data:`RED` with the word ``FAILED``; call :func:`_header`; return whether anything failed.
3. ``return _render(title, build)``, and add the chart to ``MAKERS`` in
   ``tests/unit/test_charts.py`` so the shared tests (attributes, escaping, ids, FAILED)
   cover it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

__all__ = [
    "agent_timeline",
    "gap_distribution",
    "latency_spectrum",
    "offline_queue",
    "rate_over_time",
    "rate_steps",
    "resources_over_time",
    "svg_data_uri",
]

#: Failed / lost things.
RED = "#cf222e"
#: Passed things.
GREEN = "#1a7f37"
#: Plain data (first series).
BLUE = "#0969da"
#: Inconclusive verdicts, secondary text.
GREY = "#6e7781"
PURPLE = "#8250df"
ORANGE = "#bc4c00"
TEAL = "#1b7c83"
LIGHT_RED = "#ffebe9"
#: Data colours, in order; red and green are kept for verdicts.
SERIES_COLOURS = (BLUE, PURPLE, ORANGE, TEAL, "#4d2d00", "#57606a")

#: Default figure size in inches (SVG: dpi is irrelevant).
FIGSIZE = (7.5, 3.2)
#: Most points drawn per line; longer series are decimated by :func:`_decimate`.
MAX_POINTS = 600
#: Most runs (rows) :func:`agent_timeline` draws.
MAX_RUNS = 25
#: Total event marks :func:`agent_timeline` draws (thinned per row beyond that).
MAX_EVENT_MARKS = 800

_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _rc(salt: str) -> dict[str, Any]:
    """The rcParams every chart is drawn with (applied through ``matplotlib.rc_context``)."""
    return {
        "svg.fonttype": "none",
        "svg.hashsalt": salt,
        "text.parse_math": False,
        "text.usetex": False,
        "font.family": "sans-serif",
        # A short list: with svg.fonttype 'none' every <text> repeats the whole family list.
        # DejaVu Sans is what matplotlib measures with; Verdana has close metrics in browsers.
        "font.sans-serif": ["DejaVu Sans", "Verdana", "Arial"],
        "font.size": 8.5,
        "axes.titlesize": 8.5,
        "axes.labelsize": 8.5,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#8c959f",
        "axes.grid": True,
        "grid.color": "#d0d7de",
        "grid.linewidth": 0.5,
        "axes.formatter.useoffset": False,
        "axes.formatter.limits": (-99, 99),
        "axes.prop_cycle": matplotlib.cycler(color=list(SERIES_COLOURS)),
        "lines.linewidth": 1.4,
        "path.simplify": True,
    }


_NO_METADATA = {"Format": None, "Type": None, "Creator": None, "Date": None}
_ID_RE = re.compile(r'\sid="([^"]+)"')
_REF_RE = re.compile(r'(\sid="|url\(#|href="#)([^")]+)')


def _render(
    title: str,
    build: Callable[[Figure], bool],
    *,
    figsize: tuple[float, float] = FIGSIZE,
) -> str:
    """Run ``build(fig)`` on a fresh SVG figure and return the finished ``<svg>`` string.

    ``build`` draws everything (including the title, usually via :func:`_header`) and returns
    whether it marked anything failed.
    """
    salt = uuid.uuid4().hex
    with _LOCK, matplotlib.rc_context(_rc(salt)):
        fig = Figure(figsize=figsize, layout="constrained")
        canvas = FigureCanvasSVG(fig)
        failed = bool(build(fig))
        buffer = io.StringIO()
        canvas.print_svg(buffer, metadata=_NO_METADATA)
    return _finish(buffer.getvalue(), title=title, failed=failed, token="c" + salt[:10])


def _finish(svg: str, *, title: str, failed: bool, token: str) -> str:
    """Turn matplotlib's SVG document into one inlinable, uniquely-id'd ``<svg>`` element."""
    start = svg.find("<svg")
    if start < 0:  # pragma: no cover - matplotlib always writes one
        raise RuntimeError("matplotlib wrote no <svg> element")
    svg = svg[start:].strip()
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    ids = set(_ID_RE.findall(svg))

    def rename(match: re.Match) -> str:
        name = match.group(2)
        return match.group(1) + (f"{token}-{name}" if name in ids else name)

    svg = _REF_RE.sub(rename, svg)
    svg = _compact(svg)
    # matplotlib's single global rule would otherwise apply to every SVG on the page.
    svg = svg.replace("*{stroke-linejoin", "svg.apex-chart *{stroke-linejoin", 1)
    label = html.escape(title, quote=True)
    attributes = (
        f' class="apex-chart" role="img" aria-label="{label}"'
        f' data-failed="{"true" if failed else "false"}"'
        ' style="max-width:100%;height:auto"'
    )
    root_end = svg.index(">")
    return (
        svg[:root_end] + attributes + ">\n"
        f" <title>{html.escape(title, quote=False)}</title>" + svg[root_end + 1 :]
    )


_NUMBER_RE = re.compile(r"-?\d+\.\d+")
_GEOMETRY_RE = re.compile(r'(\s(?:d|x|y)=")([^"]*)"')
_USE_GROUP_RE = re.compile(r'<g( clip-path="[^"]*")?>((?:\s*<use [^>]*/>){3,})(\s*)</g>')
_STYLE_RE = re.compile(r' style="([^"]*)"')


def _round(match: re.Match) -> str:
    text = f"{float(match.group(0)):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _hoist(match: re.Match) -> str:
    """Move the style shared by every ``<use>`` of a marker group onto the group."""
    clip, body, tail = match.group(1) or "", match.group(2), match.group(3)
    styles = _STYLE_RE.findall(body)
    if len(styles) != body.count("<use") or len(set(styles)) != 1:
        return match.group(0)
    style = styles[0]
    props = [prop.strip() for prop in style.split(";") if prop.strip()]
    # These two must stay on each <use>: matplotlib's "*{stroke-linejoin...}" rule targets
    # every element directly and would beat a value inherited from the group.
    local = [prop for prop in props if prop.split(":")[0].strip() in ("stroke-linejoin", "stroke-linecap")]
    shared = [prop for prop in props if prop not in local]
    body = body.replace(f' style="{style}"', f' style="{"; ".join(local)}"' if local else "")
    return f'<g{clip} style="{"; ".join(shared)}">{body}{tail}</g>'


def _compact(svg: str) -> str:
    """Make matplotlib's SVG smaller without changing what it shows.

    Coordinates in ``d``/``x``/``y`` are rounded to 0.01 pt (matplotlib writes 6 decimals) and
    path commands are put on one line; groups of 3+ marker ``<use>`` elements that all repeat
    one style get it once on the group (inherited). Markers dominate busy charts: this takes a
    25-run agent timeline from about 83 KB to about 59 KB.
    """
    svg = _GEOMETRY_RE.sub(
        lambda m: m.group(1) + _NUMBER_RE.sub(_round, re.sub(r"\s*\n\s*", " ", m.group(2)).strip()) + '"', svg
    )
    return _USE_GROUP_RE.sub(_hoist, svg)


def svg_data_uri(svg: str) -> str:
    """``data:image/svg+xml;base64,...`` for ``svg`` (a chart string), to use as an ``<img src>``."""
    if not isinstance(svg, str) or "<svg" not in svg:
        raise ValueError("svg_data_uri: svg must be a string holding an <svg> element")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------------------------
# Formatting and axes
# --------------------------------------------------------------------------------------------


def _plain(value: float, digits: int = 6) -> str:
    """A tick label: plain decimal with thousands separators, never scientific notation."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    text = np.format_float_positional(abs(value), precision=digits, unique=True, trim="-")
    whole, _, fraction = text.partition(".")
    text = f"{int(whole):,}" + (f".{fraction}" if fraction else "")
    if text == "0":
        return "0"
    return ("-" if value < 0 else "") + text


def _human(value: float) -> str:
    """A number for a label, about 3 significant digits: ``1,200``, ``12.5``, ``0.0123``."""
    value = float(value)
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{round(value):,}"
    if magnitude >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if magnitude >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return np.format_float_positional(value, precision=3, unique=True, fractional=False, trim="-")


def _pct_text(percentile: float) -> str:
    """``99`` -> ``99``, ``99.9`` -> ``99.9`` (no trailing zeros, no exponent)."""
    return _plain(percentile, digits=4)


_PLAIN = ticker.FuncFormatter(lambda value, _pos: _plain(value))


def _plain_axis(axis) -> None:
    """Plain-number tick labels on a linear axis (no offset, no scientific notation)."""
    axis.set_major_formatter(_PLAIN)


def _log_axis(axis, low: float, high: float) -> None:
    """Plain-number tick labels on a log axis: 1-2-5 ticks over short spans, decades otherwise."""
    decades = math.log10(max(high, 1e-300) / max(low, 1e-300)) if low > 0 else 99
    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10) * 1.0))
    axis.set_minor_formatter(ticker.NullFormatter())


def _header(fig: Figure, title: str, ax=None, *, subtitle: str = "", failed_text: str = "") -> None:
    """The chart title (left), an optional grey subtitle and an optional red failure text."""
    fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
    if ax is not None and subtitle:
        ax.set_title(subtitle, loc="left", color=GREY, fontsize=8)
    if ax is not None and failed_text:
        ax.set_title(failed_text, loc="right", color=RED, fontsize=8.5, fontweight="bold")


def _no_data(ax, text: str = "no data") -> None:
    """Mark an axes as having nothing to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=GREY, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _status_colour(passed: bool | None) -> str:
    return GREY if passed is None else (GREEN if passed else RED)


# --------------------------------------------------------------------------------------------
# Input checking and decimation
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: Any, what: str, *, minimum: float | None = None, above: float | None = None) -> float:
    """``value`` as a finite float, else ``ValueError`` naming ``what``."""
    if not _is_number(value) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    value = float(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {_plain(minimum)}, got {_plain(value)}")
    if above is not None and value <= above:
        raise ValueError(f"{what} must be > {_plain(above)}, got {_plain(value)}")
    return value


def _count(value: Any, what: str) -> int:
    """A non-negative integer count, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if _is_number(value) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{what} must be a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


def _verdict(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{what} must be True, False or None, got {value!r}")


def _text(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _array(values: Any, what: str, *, columns: int | None = None, minimum: float | None = None) -> np.ndarray:
    """``values`` as a float array (1-D, or N x ``columns``); finite and >= ``minimum``."""
    if isinstance(values, (str, bytes, Mapping)):
        raise ValueError(f"{what} must be a list of numbers, got {type(values).__name__}")
    try:
        data = np.asarray(list(values), dtype=float)
    except (TypeError, ValueError) as error:
        shape = f"(n, {columns}) tuples" if columns else "numbers"
        raise ValueError(f"{what} must be a list of {shape}: {error}") from None
    if columns is None:
        if data.ndim != 1:
            raise ValueError(f"{what} must be a flat list of numbers")
    else:
        if data.size == 0:
            return data.reshape(0, columns)
        if data.ndim != 2 or data.shape[1] != columns:
            raise ValueError(f"{what} must be a list of {columns}-tuples, got shape {data.shape}")
    if data.size and not np.all(np.isfinite(data)):
        raise ValueError(f"{what} contains NaN or infinite values")
    if minimum is not None and data.size and data.min() < minimum:
        raise ValueError(f"{what} contains a negative value ({_plain(float(data.min()))})")
    return data


def _sequence(values: Any, what: str) -> list:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a list, got {type(values).__name__}")
    return list(values)


def _mapping(value: Any, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    return value


def _decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of the line (x, y), in order, keeping the extremes.

    The series is cut into ``max_points // 2`` buckets by index and each bucket keeps its
    lowest and highest point, so peaks and dips (and the global max and min) survive; the
    first and last points are always kept.
    """
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep = [0, n - 1]
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            segment = y[a:b]
            keep.append(a + int(np.argmin(segment)))
            keep.append(a + int(np.argmax(segment)))
    index = np.unique(keep)
    return x[index], y[index]


# --------------------------------------------------------------------------------------------
# 1. Latency spectrum
# --------------------------------------------------------------------------------------------

#: Percentiles at or above this are drawn at the right-most position, labelled ``max``.
MAX_PERCENTILE = 99.999
_SPECTRUM_MAX_X = 1.0 / (1.0 - MAX_PERCENTILE / 100.0)
_SPECTRUM_TICKS = ((0.0, "min"), (50.0, "50%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"), (99.99, "99.99%"))


def _pct_x(percentile: np.ndarray | float) -> np.ndarray | float:
    """Position of a percentile on the spectrum's x axis: 1 / (1 - p/100), clipped at ``max``."""
    clipped = np.minimum(percentile, MAX_PERCENTILE)
    return 1.0 / (1.0 - clipped / 100.0)


def latency_spectrum(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    thresholds: Sequence[Mapping[str, Any]] = (),
    title: str = "Latency by percentile",
) -> str:
    """HdrHistogram-style percentile spectrum of one or more latency distributions.

    ``series``: list of ``(label, points)``, ``points`` a list of ``(percentile, value_s)``
    with percentile in 0..100 and the latency in seconds (drawn in ms). The x axis is
    ``1 / (1 - p/100)`` on a log scale, so 90, 99, 99.9 and 99.99 are equally spaced;
    percentiles >= 99.999 are drawn at the right-most position, labelled ``max``. The y axis is
    linear, or log when the largest value is more than 100 x the smallest median.

    ``thresholds``: dicts ``{"percentile": 99.0, "value_s": 0.5, "label": "p99 ≤ 500 ms",
    "passed": True|False|None, "samples": 15000, "measured_s": 0.43}`` (only ``percentile``
    and ``value_s`` required). Each is a dashed line at ``value_s`` from its percentile
    rightwards, labelled ``threshold <label> (n=<samples>)``, plus a marker at the measured
    value: ``measured_s`` if given, else the first series with data interpolated at that
    percentile. ``passed`` False draws a red X and ``FAILED``; True green; None grey. Threshold
    labels (with their verdict) are legend entries, as thresholds often share a value.
    """
    title = _text(title, "title")
    rows = []
    for i, item in enumerate(_sequence(series, "series")):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            raise ValueError(f"series[{i}] must be a (label, points) pair")
        label = str(item[0])
        points = _array(item[1], f"series[{i}] ({label}) points", columns=2)
        if points.size:
            if points[:, 0].min() < 0 or points[:, 0].max() > 100:
                raise ValueError(f"series[{i}] ({label}): percentiles must be within 0..100")
            if points[:, 1].min() < 0:
                raise ValueError(f"series[{i}] ({label}): negative latency {_plain(points[:, 1].min())} s")
            points = points[np.argsort(points[:, 0], kind="stable")]
        rows.append((label, points))

    checked = []
    for i, raw in enumerate(_sequence(thresholds, "thresholds")):
        raw = _mapping(raw, f"thresholds[{i}]")
        pct = _number(raw.get("percentile"), f"thresholds[{i}] percentile", minimum=0)
        if pct > 100:
            raise ValueError(f"thresholds[{i}] percentile must be within 0..100, got {_plain(pct)}")
        value = _number(raw.get("value_s"), f"thresholds[{i}] value_s", minimum=0)
        label = _text(raw.get("label"), f"thresholds[{i}] label") or f"p{_pct_text(pct)} ≤ {_human(value * 1000)} ms"
        if raw.get("samples") is not None:
            label += f" (n={_count(raw['samples'], f'thresholds[{i}] samples')})"
        passed = _verdict(raw.get("passed"), f"thresholds[{i}] passed")
        measured = raw.get("measured_s")
        if measured is not None:
            measured = _number(measured, f"thresholds[{i}] measured_s", minimum=0)
        checked.append((pct, value, label, passed, measured))

    failed_labels = [c[2] for c in checked if c[3] is False]
    failed_text = ("FAILED: " + "; ".join(failed_labels)) if failed_labels else ""

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        if not any(points.size for _, points in rows):
            _header(fig, title, ax, failed_text=failed_text)
            _no_data(ax)
            return bool(failed_labels)

        all_ms = np.concatenate([points[:, 1] for _, points in rows if points.size]) * 1000.0
        medians = [float(np.interp(50.0, points[:, 0], points[:, 1])) * 1000.0 for _, points in rows if points.size]
        positive = all_ms[all_ms > 0]
        low = min([m for m in medians if m > 0], default=float(positive.min()) if positive.size else 0.0)
        high = max(float(all_ms.max()), max((c[1] * 1000 for c in checked), default=0.0))
        log_y = low > 0 and high / low > 100

        for index, (label, points) in enumerate(rows):
            if not points.size:
                continue
            x, y = _decimate(_pct_x(points[:, 0]), points[:, 1] * 1000.0)
            ax.plot(
                x, y, label=label, color=SERIES_COLOURS[index % len(SERIES_COLOURS)],
                marker="o" if len(x) <= 40 else None, markersize=3,
            )

        failed = False
        first = next(points for _, points in rows if points.size)
        for pct, value, label, passed, measured in checked:
            colour = _status_colour(passed)
            x0 = float(_pct_x(pct))
            y0 = value * 1000.0
            verdict = {True: "passed", False: "FAILED", None: "inconclusive"}[passed]
            # Labelled in the legend: thresholds often share a value, inline texts would collide.
            ax.hlines(y0, x0, _SPECTRUM_MAX_X, colors=colour, linestyles="dashed", linewidth=1.2,
                      label=f"threshold {label}: {verdict}")
            if measured is None:
                measured = float(np.interp(np.log10(x0), np.log10(_pct_x(first[:, 0])), first[:, 1]))
            ym = measured * 1000.0
            high = max(high, ym)
            if passed is False:
                failed = True
                ax.plot([x0], [ym], marker="X", markersize=9, color=RED, linestyle="none")
                ax.annotate(
                    "FAILED", (x0, ym), xytext=(-6, 6), textcoords="offset points", ha="right",
                    color=RED, fontweight="bold", fontsize=8,
                )
            else:
                ax.plot([x0], [ym], marker="o", markersize=6, color=colour, linestyle="none",
                        markerfacecolor="white" if passed is None else colour)

        ax.set_xscale("log")
        ax.set_xlim(0.85, _SPECTRUM_MAX_X * 1.25)
        ticks = [float(_pct_x(p)) for p, _ in _SPECTRUM_TICKS] + [_SPECTRUM_MAX_X]
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ticker.FixedFormatter([t for _, t in _SPECTRUM_TICKS] + ["max"]))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("percentile")
        if log_y:
            ax.set_yscale("log", nonpositive="clip")
            bottom = float(positive.min()) / 1.5 if positive.size else 0.001
            ax.set_ylim(bottom, high * 1.6)
            _log_axis(ax.yaxis, bottom, high)
        else:
            ax.set_ylim(0, high * 1.15 if high > 0 else 1.0)
            _plain_axis(ax.yaxis)
        ax.set_ylabel("latency (ms)")
        ax.legend(loc="upper left")
        _header(fig, title, ax, failed_text=failed_text)
        return failed

    return _render(title, build)


# --------------------------------------------------------------------------------------------
# 2. Offered and answered rate over time
# --------------------------------------------------------------------------------------------


def rate_over_time(
    times_s: Sequence[float],
    offered: Sequence[float],
    answered: Sequence[float],
    *,
    phases: Sequence[Mapping[str, Any]] = (),
    title: str = "Offered and answered rate",
) -> str:
    """Offered (scheduled) and answered messages per second, per time bucket.

    ``times_s``, ``offered`` and ``answered`` are lists of equal length: bucket starts in
    seconds since the run started (ascending) and the rates in msg/s of that bucket.

    ``phases``: dicts ``{"name": "peak", "start_s": 2.0, "end_s": 5.0, "target_rate": 2000.0,
    "failed": False, "note": "achieved 0.62 < 0.9"}`` (``name``, ``start_s`` and ``end_s``
    required). Bands are shaded alternately and labelled with name and target; targets are a
    dashed step; a failed phase is shaded light red and labelled ``FAILED: <note>`` (narrow
    bands show just the name and ``FAILED``; the top right always says ``FAILED: <name>
    (<note>)`` for every failed phase).
    """
    title = _text(title, "title")
    t = _array(times_s, "times_s", minimum=0)
    off = _array(offered, "offered", minimum=0)
    ans = _array(answered, "answered", minimum=0)
    if not (len(t) == len(off) == len(ans)):
        raise ValueError(
            f"times_s, offered and answered must have equal lengths, got {len(t)}, {len(off)} and {len(ans)}"
        )
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("times_s must be in ascending order")

    checked = []
    for i, raw in enumerate(_sequence(phases, "phases")):
        raw = _mapping(raw, f"phases[{i}]")
        name = _text(raw.get("name"), f"phases[{i}] name", default=f"phase {i + 1}")
        start = _number(raw.get("start_s"), f"phases[{i}] start_s", minimum=0)
        end = _number(raw.get("end_s"), f"phases[{i}] end_s", minimum=0)
        if end < start:
            raise ValueError(f"phases[{i}] ({name}): end_s {_plain(end)} is before start_s {_plain(start)}")
        target = raw.get("target_rate")
        if target is not None:
            target = _number(target, f"phases[{i}] target_rate", minimum=0)
        failed = raw.get("failed", False)
        if not isinstance(failed, bool):
            raise ValueError(f"phases[{i}] failed must be True or False, got {failed!r}")
        note = _text(raw.get("note"), f"phases[{i}] note")
        checked.append((name, start, end, target, failed, note))

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        failed_any = any(p[4] for p in checked)
        if not len(t) and not checked:
            _header(fig, title, ax)
            _no_data(ax)
            return False

        top = max([float(off.max()) if len(off) else 0.0, float(ans.max()) if len(ans) else 0.0]
                  + [p[3] for p in checked if p[3] is not None])
        top = top if top > 0 else 1.0
        label_transform = blended_transform_factory(ax.transData, ax.transAxes)
        ends = [p[2] for p in checked] + ([float(t[-1])] if len(t) else [])
        starts = [p[1] for p in checked] + ([float(t[0])] if len(t) else [])
        span = (max(ends) - min(starts)) or 1.0
        step_x: list[float] = []
        step_y: list[float] = []
        for i, (name, start, end, target, failed, note) in enumerate(checked):
            shade = LIGHT_RED if failed else ("#f6f8fa" if i % 2 == 0 else "#eaeef2")
            ax.axvspan(start, end, color=shade, zorder=0, linewidth=0)
            wide = (end - start) >= 0.2 * span
            text = name
            if target is not None:
                text += f"\ntarget {_human(target)} msg/s" if wide else f"\n{_human(target)}/s"
            if failed:
                text += "\nFAILED" + (f": {note}" if note and wide else "")
            elif note and wide:
                text += f"\n{note}"
            ax.text(
                (start + end) / 2, 0.97, text, transform=label_transform, ha="center", va="top",
                fontsize=7, color=RED if failed else "#424a53", fontweight="bold" if failed else "normal",
            )
            if target is not None:
                if step_x and step_x[-1] != start:
                    step_x.append(np.nan)
                    step_y.append(np.nan)
                step_x += [start, end]
                step_y += [target, target]
        if step_x:
            ax.plot(step_x, step_y, linestyle="--", color="#424a53", linewidth=1.1, label="target rate")

        if len(t):
            x, y = _decimate(t, off)
            ax.plot(x, y, color=GREY, linewidth=1.1, drawstyle="steps-post", label="offered (scheduled)")
            x, y = _decimate(t, ans)
            ax.plot(x, y, color=BLUE, linewidth=1.6, drawstyle="steps-post", label="answered")
        else:
            _no_data(ax)
        ax.set_ylim(0, top * 1.45)
        _plain_axis(ax.yaxis)
        _plain_axis(ax.xaxis)
        ax.set_xlabel("time since run start (s)")
        ax.set_ylabel("rate (msg/s)")
        if len(t) or step_x:
            fig.legend(loc="outside lower center", ncol=3)
        failures = "; ".join(p[0] + (f" ({p[5]})" if p[5] else "") for p in checked if p[4])
        _header(fig, title, ax, failed_text=f"FAILED: {failures}" if failed_any else "")
        return failed_any

    return _render(title, build)


# --------------------------------------------------------------------------------------------
# 3. Achieved ratio by offered rate
# --------------------------------------------------------------------------------------------


def rate_steps(
    steps: Sequence[Mapping[str, Any]],
    *,
    threshold: float,
    title: str = "Achieved ratio by offered rate",
) -> str:
    """Achieved ratio (answered rate ÷ offered rate) against offered rate, one point per step.

    ``steps``: dicts ``{"offered": 1000.0, "ratio": 0.98, "passed": True|False|None,
    "name": "step-1"}`` (``offered`` > 0 and ``ratio`` >= 0 required). The x axis is offered
    msg/s, log when the offered rates span more than 20 x. ``threshold`` (e.g. 0.9) is a dashed
    line ``threshold ≥ 0.9``. Failed steps are red X marked ``FAILED``, passed green,
    inconclusive grey.
    """
    title = _text(title, "title")
    limit = _number(threshold, "threshold", minimum=0)
    checked = []
    for i, raw in enumerate(_sequence(steps, "steps")):
        raw = _mapping(raw, f"steps[{i}]")
        offered = _number(raw.get("offered"), f"steps[{i}] offered (msg/s)", above=0)
        ratio = _number(raw.get("ratio"), f"steps[{i}] ratio", minimum=0)
        passed = _verdict(raw.get("passed"), f"steps[{i}] passed")
        name = _text(raw.get("name"), f"steps[{i}] name")
        checked.append((offered, ratio, passed, name))
    checked.sort(key=lambda step: step[0])

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        ax.axhline(limit, linestyle="--", color="#424a53", linewidth=1.1)
        ax.annotate(
            f"threshold ≥ {_human(limit)}", (0.0, limit), xycoords=("axes fraction", "data"),
            xytext=(4, 3), textcoords="offset points", fontsize=7.5, color="#424a53",
        )
        if not checked:
            ax.set_yticks([limit])
            ax.set_xticks([])
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color=GREY, fontsize=11)
            _header(fig, title, ax)
            return False
        x = np.array([s[0] for s in checked])
        y = np.array([s[1] for s in checked])
        ax.plot(x, y, color=BLUE, linewidth=1.2, label="achieved ratio", zorder=2)
        failed = False
        seen: set = set()
        for offered, ratio, passed, name in checked:
            colour = _status_colour(passed)
            key = {True: "passed", False: "failed", None: "inconclusive"}[passed]
            legend = key if key not in seen else None
            seen.add(key)
            if passed is False:
                failed = True
                ax.plot([offered], [ratio], marker="X", markersize=9, color=RED, linestyle="none", label=legend, zorder=3)
                ax.annotate("FAILED", (offered, ratio), xytext=(0, -12), textcoords="offset points",
                            ha="center", va="top", color=RED, fontweight="bold", fontsize=7.5)
            else:
                ax.plot([offered], [ratio], marker="o", markersize=6, color=colour, linestyle="none", label=legend,
                        markerfacecolor="white" if passed is None else colour, zorder=3)
            if name and len(checked) <= 12:
                ax.annotate(name, (offered, ratio), xytext=(0, 6), textcoords="offset points", ha="center",
                            fontsize=6.5, color=GREY)
        low, high = float(x.min()), float(x.max())
        if high / low > 20:
            ax.set_xscale("log")
            ax.set_xlim(low / 1.4, high * 1.4)
            _log_axis(ax.xaxis, low, high)
        else:
            pad = (high - low) * 0.08 or low * 0.1
            ax.set_xlim(max(0.0, low - pad), high + pad)
            _plain_axis(ax.xaxis)
        ax.set_ylim(0, max(1.1, float(y.max()) * 1.1, limit * 1.1))
        _plain_axis(ax.yaxis)
        ax.set_xlabel("offered rate (msg/s)")
        ax.set_ylabel("achieved ratio\n(answered ÷ offered)")
        fig.legend(loc="outside lower center", ncol=4)
        _header(fig, title, ax, failed_text="FAILED" if failed else "")
        return failed

    return _render(title, build)


# --------------------------------------------------------------------------------------------
# 4. Server and client resources
# --------------------------------------------------------------------------------------------


def resources_over_time(
    server: Sequence[tuple[float, float, float]],
    client: Sequence[tuple[float, float, float]],
    *,
    memory_limit_mb: float | None = None,
    memory_failed: bool | None = None,
    memory_limit_label: str | None = None,
    title: str = "Server and client resources",
) -> str:
    """Memory (MB) and CPU (% of one core) of the server and the client over time.

    ``server`` and ``client``: lists of ``(t_seconds, rss_mb, cpu_percent)``; either may be
    empty. Two panels side by side: memory and CPU.

    ``memory_limit_mb``: the RSS level (MB, absolute, as on the axis) the server must stay
    under, drawn as a dashed line. For a growth limit pass baseline + allowed growth and word it
    with ``memory_limit_label`` (e.g. ``"server growth limit 100 MB (baseline 80 MB)"``);
    the default label is ``server memory limit <N> MB``. ``memory_failed``: True marks the
    memory panel (red title with ``FAILED``, red limit line), False draws the limit green,
    None grey.
    """
    title = _text(title, "title")
    srv = _array(server, "server samples (t_seconds, rss_mb, cpu_percent)", columns=3, minimum=0)
    cli = _array(client, "client samples (t_seconds, rss_mb, cpu_percent)", columns=3, minimum=0)
    limit = None if memory_limit_mb is None else _number(memory_limit_mb, "memory_limit_mb", minimum=0)
    verdict = _verdict(memory_failed, "memory_failed")
    limit_text = _text(memory_limit_label, "memory_limit_label") or (
        f"server memory limit {_human(limit)} MB" if limit is not None else ""
    )
    for name, data in (("server", srv), ("client", cli)):
        if len(data) > 1 and np.any(np.diff(data[:, 0]) < 0):
            raise ValueError(f"{name} samples must be in ascending time order")

    def build(fig: Figure) -> bool:
        memory, cpu = fig.subplots(1, 2)
        failed = verdict is True
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        if not len(srv) and not len(cli):
            _no_data(memory)
            _no_data(cpu)
        for name, data, colour in (("server", srv, BLUE), ("client", cli, PURPLE)):
            if not len(data):
                continue
            x, y = _decimate(data[:, 0], data[:, 1])
            memory.plot(x, y, color=colour, label=name)
            x, y = _decimate(data[:, 0], data[:, 2])
            cpu.plot(x, y, color=colour, label=name)
        if limit is not None:
            colour = RED if verdict is True else (GREEN if verdict is False else GREY)
            memory.axhline(limit, linestyle="--", color=colour, linewidth=1.2)
            memory.annotate(
                limit_text, (0.0, limit), xycoords=("axes fraction", "data"), xytext=(4, 3),
                textcoords="offset points", fontsize=7, color=colour,
            )
        if len(srv) or len(cli):
            top = max([limit or 0.0] + [float(d[:, 1].max()) for d in (srv, cli) if len(d)])
            memory.set_ylim(0, top * 1.2 if top > 0 else 1.0)
            cpu.set_ylim(bottom=0)
            for ax in (memory, cpu):
                _plain_axis(ax.xaxis)
                _plain_axis(ax.yaxis)
                ax.set_xlabel("time (s)")
            memory.set_ylabel("memory RSS (MB)")
            cpu.set_ylabel("CPU (% of one core)")
            memory.legend(loc="lower right")
        elif limit is not None:
            memory.set_ylim(0, limit * 1.2 or 1.0)
        memory_title = "memory (MB)"
        if failed:
            memory.set_title(memory_title + " — FAILED", loc="left", color=RED, fontweight="bold",
                             backgroundcolor=LIGHT_RED)
        else:
            memory.set_title(memory_title, loc="left", color=GREY)
        cpu.set_title("CPU (% of one core)", loc="left", color=GREY)
        return failed

    return _render(title, build)


# --------------------------------------------------------------------------------------------
# 5. Agent timeline
# --------------------------------------------------------------------------------------------

#: Event kind -> (marker, colour, words for the legend). Unknown kinds use ``_OTHER_KIND``.
EVENT_KINDS: dict[str, tuple[str, str, str]] = {
    "agent_started": ("o", BLUE, "agent started"),
    "agent_thinking": (".", PURPLE, "thinking"),
    "tool_executing": (">", ORANGE, "tool executing"),
    "tool_completed": ("s", TEAL, "tool completed"),
    "answer_chunk": ("|", "#54aeff", "answer chunk"),
    "final": ("D", GREEN, "final answer"),
    "error": ("X", RED, "error"),
}
_OTHER_KIND = ("o", "#afb8c1", "other kind")


def _thin(events: list[tuple[float, str]], cap: int) -> list[tuple[float, str]]:
    """At most about ``cap`` events, thinned per kind (each kind keeps its first and last)."""
    if len(events) <= cap:
        return events
    by_kind: dict[str, list[tuple[float, str]]] = {}
    for event in events:
        by_kind.setdefault(event[1], []).append(event)
    kept = []
    for items in by_kind.values():
        allowed = max(2, round(cap * len(items) / len(events)))
        if len(items) <= allowed:
            kept += items
        else:
            index = np.unique(np.linspace(0, len(items) - 1, allowed).round().astype(int))
            kept += [items[i] for i in index]
    return sorted(kept)


def agent_timeline(
    runs: Sequence[Mapping[str, Any]],
    *,
    title: str = "Agent runs: events over time",
) -> str:
    """One row per agent run, its events as marks over time since the run started.

    ``runs``: dicts ``{"label": "run r-3 (c1)", "sent_s": 0.10, "events": [(t_s, kind), ...],
    "failed": False, "note": ""}``. Kinds are those of :data:`EVENT_KINDS` (unknown kinds grey).
    A thin line runs from ``sent_s`` to the last event. At most :data:`MAX_RUNS` rows are drawn
    (the first ones; the chart then says ``25 of N runs shown``); very busy rows are thinned to
    keep the file small (the chart says so). Failed runs have red labels and ``FAILED: <note>``.

    The figure grows taller with the number of rows (up to about 6 inches for 25 rows).
    """
    title = _text(title, "title")
    all_runs = _sequence(runs, "runs")
    checked = []
    for i, raw in enumerate(all_runs[:MAX_RUNS]):
        raw = _mapping(raw, f"runs[{i}]")
        label = str(raw.get("label") if raw.get("label") is not None else f"run {i + 1}")
        sent = raw.get("sent_s")
        sent = None if sent is None else _number(sent, f"runs[{i}] ({label}) sent_s", minimum=0)
        events = []
        for j, event in enumerate(_sequence(raw.get("events", ()), f"runs[{i}] ({label}) events")):
            if isinstance(event, (str, bytes)) or not isinstance(event, Sequence) or len(event) != 2:
                raise ValueError(f"runs[{i}] ({label}) events[{j}] must be a (t_s, kind) pair")
            t = _number(event[0], f"runs[{i}] ({label}) events[{j}] time", minimum=0)
            events.append((t, str(event[1])))
        events.sort(key=lambda e: e[0])
        failed = raw.get("failed", False)
        if not isinstance(failed, bool):
            raise ValueError(f"runs[{i}] ({label}) failed must be True or False, got {failed!r}")
        note = _text(raw.get("note"), f"runs[{i}] ({label}) note")
        checked.append((label, sent, events, failed, note))

    rows = max(1, len(checked))
    height = min(6.2, max(FIGSIZE[1], 1.3 + 0.19 * rows))

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        if not checked:
            _header(fig, title, ax)
            _no_data(ax)
            return False
        cap = max(24, MAX_EVENT_MARKS // len(checked))
        marks: dict[str, tuple[list[float], list[float]]] = {}
        drawn = total = 0
        failed_any = False
        right = 0.0
        line_x: list[float] = []
        line_y: list[float] = []
        for row, (label, sent, events, failed, note) in enumerate(checked):
            y = -row
            total += len(events)
            shown = _thin(events, cap)
            drawn += len(shown)
            start = sent if sent is not None else (events[0][0] if events else None)
            end = events[-1][0] if events else start
            if start is not None:
                line_x += [start, end, np.nan]
                line_y += [y, y, np.nan]
                right = max(right, end)
            if sent is not None:
                marks.setdefault("__sent__", ([], []))
                marks["__sent__"][0].append(sent)
                marks["__sent__"][1].append(y)
            for t, kind in shown:
                key = kind if kind in EVENT_KINDS else "__other__"
                marks.setdefault(key, ([], []))
                marks[key][0].append(t)
                marks[key][1].append(y)
            if failed:
                failed_any = True
                note = note if len(note) <= 40 else note[:39] + "…"
                text = ax.annotate(
                    "FAILED" + (f": {note}" if note else ""), (end if end is not None else 0.0, y),
                    xytext=(8, 0), textcoords="offset points", va="center", fontsize=7, color=RED,
                    fontweight="bold",
                )
                text.set_in_layout(False)  # the x axis leaves room; a long note must not squeeze it
        if line_x:  # one path for all rows: smaller than a line per row
            ax.plot(line_x, line_y, color="#8c959f", linewidth=0.7, zorder=1)
        handles = []
        if "__sent__" in marks:
            xs, ys = marks["__sent__"]
            ax.plot(xs, ys, linestyle="none", marker="o", markersize=4, markerfacecolor="white",
                    markeredgecolor="#57606a", zorder=2)
            handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                                  markeredgecolor="#57606a", label="sent"))
        for key in [*EVENT_KINDS, "__other__"]:
            if key not in marks:
                continue
            marker, colour, words = EVENT_KINDS.get(key, _OTHER_KIND)
            xs, ys = marks[key]
            size = 7 if marker in ("X", "|") else 5
            ax.plot(xs, ys, linestyle="none", marker=marker, markersize=size, color=colour, zorder=3,
                    markeredgewidth=1.2 if marker == "|" else 0.6)
            handles.append(Line2D([], [], linestyle="none", marker=marker, color=colour, label=words))
        ax.set_yticks([-i for i in range(len(checked))])
        names = [c[0] if len(c[0]) <= 40 else c[0][:39] + "…" for c in checked]
        ax.set_yticklabels(names)
        for tick, (_l, _s, _e, failed, _n) in zip(ax.get_yticklabels(), checked):
            if failed:
                tick.set_color(RED)
                tick.set_fontweight("bold")
        ax.set_ylim(-len(checked) + 0.4, 0.6)
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, (right or 1.0) * (1.45 if failed_any else 1.05))
        _plain_axis(ax.xaxis)
        ax.set_xlabel("time since run start (s)")
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5))
        notes = []
        if len(all_runs) > len(checked):
            notes.append(f"{len(checked)} of {len(all_runs)} runs shown")
        if drawn < total:
            notes.append(f"{drawn:,} of {total:,} events marked (busy rows thinned)")
        _header(fig, title, ax, subtitle="; ".join(notes),
                failed_text=f"FAILED: {sum(c[3] for c in checked)} run(s)" if failed_any else "")
        return failed_any

    return _render(title, build, figsize=(FIGSIZE[0], height))


# --------------------------------------------------------------------------------------------
# 6. Gap distribution
# --------------------------------------------------------------------------------------------


def gap_distribution(
    gaps_s: Sequence[float],
    *,
    threshold_s: float | None = None,
    stall_s: float | None = None,
    percentile: float = 99.0,
    passed: bool | None = None,
    title: str = "Gaps between events",
) -> str:
    """Histogram of the gaps between consecutive events (ms), log-binned when the span is wide.

    Dashed vertical lines: the threshold on the ``percentile`` (``threshold p99 ≤ 500 ms``),
    the measured ``percentile`` of ``gaps_s`` (``measured p99 = 432 ms``) and the stall
    threshold (``stall 1,000 ms``). ``passed`` False draws the measured line red with
    ``FAILED``; True green; None blue.
    """
    title = _text(title, "title")
    gaps = _array(gaps_s, "gaps_s", minimum=0) * 1000.0
    limit = None if threshold_s is None else _number(threshold_s, "threshold_s", minimum=0) * 1000.0
    stall = None if stall_s is None else _number(stall_s, "stall_s", minimum=0) * 1000.0
    pct = _number(percentile, "percentile", above=0)
    if pct > 100:
        raise ValueError(f"percentile must be within 0..100, got {_plain(pct)}")
    verdict = _verdict(passed, "passed")
    name = f"p{_pct_text(pct)}"

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        failed = verdict is False
        if not len(gaps):
            _header(fig, title, ax, failed_text="FAILED" if failed else "")
            _no_data(ax)
            return failed
        positive = gaps[gaps > 0]
        low = float(positive.min()) if positive.size else 0.0
        high = max(float(gaps.max()), limit or 0.0, stall or 0.0)
        log_x = low > 0 and high / low > 100
        if log_x:
            edges = np.geomspace(low, float(gaps.max()) * 1.0001, 41)
            counts, _ = np.histogram(np.clip(gaps, low, None), bins=edges)
        else:
            counts, edges = np.histogram(gaps, bins=40, range=(0.0, float(gaps.max()) or 1.0))
        ax.stairs(counts, edges, fill=True, color="#a5d0ff", label=f"gaps (n={len(gaps):,})")
        ax.stairs(counts, edges, color=BLUE, linewidth=0.8)
        measured = float(np.percentile(gaps, pct))
        if limit is not None:
            ax.axvline(limit, linestyle="--", color="#424a53", linewidth=1.2,
                       label=f"threshold {name} ≤ {_human(limit)} ms")
        colour = {None: BLUE, True: GREEN, False: RED}[verdict]
        ax.axvline(measured, linestyle="--", color=colour, linewidth=1.6 if failed else 1.2,
                   label=f"measured {name} = {_human(measured)} ms")
        if failed:
            ax.annotate("FAILED", (measured, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -4),
                        textcoords="offset points", va="top", color=RED, fontweight="bold", fontsize=8)
        if stall is not None:
            ax.axvline(stall, linestyle=":", color=ORANGE, linewidth=1.4, label=f"stall {_human(stall)} ms")
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(low / 1.3, high * 1.3)
            _log_axis(ax.xaxis, low, high)
        else:
            ax.set_xlim(0, high * 1.08 if high > 0 else 1.0)
            _plain_axis(ax.xaxis)
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        _plain_axis(ax.yaxis)
        ax.set_xlabel("gap between consecutive events (ms)" + (", log scale" if log_x else ""))
        ax.set_ylabel("number of gaps")
        fig.legend(loc="outside lower center", ncol=4)
        _header(fig, title, ax, failed_text=f"FAILED: {name} over threshold" if failed else "")
        return failed

    return _render(title, build)


# --------------------------------------------------------------------------------------------
# 7. Offline queue
# --------------------------------------------------------------------------------------------


def offline_queue(
    *,
    pushed: int,
    delivered: int,
    evicted: int = 0,
    expired: int = 0,
    refused: int = 0,
    capacity: int | None = None,
    policy: str | None = None,
    failed: bool = False,
    note: str = "",
    title: str = "Offline queue",
) -> str:
    """What happened to the messages pushed for an offline user, as one stacked bar.

    The bar ``pushed N`` is split into delivered (green), evicted, expired, refused and — when
    pushed exceeds the rest — lost (red), counts written on the segments and in the legend;
    ``capacity`` and ``policy`` go in the subtitle. ``failed`` True marks the chart
    (``FAILED: <note>`` in red); a lost segment alone does not set ``data-failed`` (the
    verdict is the caller's).
    """
    title = _text(title, "title")
    counts = {
        "pushed": _count(pushed, "pushed"),
        "delivered": _count(delivered, "delivered"),
        "evicted": _count(evicted, "evicted"),
        "expired": _count(expired, "expired"),
        "refused": _count(refused, "refused"),
    }
    cap = None if capacity is None else _count(capacity, "capacity")
    policy_text = _text(policy, "policy")
    note = _text(note, "note")
    if not isinstance(failed, bool):
        raise ValueError(f"failed must be True or False, got {failed!r}")
    accounted = sum(v for k, v in counts.items() if k != "pushed")
    if accounted > counts["pushed"]:
        raise ValueError(
            f"delivered + evicted + expired + refused = {accounted} exceeds pushed = {counts['pushed']}"
        )
    lost = counts["pushed"] - accounted
    segments = [
        ("delivered", counts["delivered"], GREEN),
        ("evicted", counts["evicted"], ORANGE),
        ("expired", counts["expired"], "#9a6700"),
        ("refused", counts["refused"], "#57606a"),
        ("lost", lost, RED),
    ]
    subtitle = " · ".join(
        part for part in (
            f"capacity {cap:,}" if cap is not None else "",
            f"policy {policy_text}" if policy_text else "",
        ) if part
    )

    def build(fig: Figure) -> bool:
        ax = fig.add_subplot()
        _header(fig, title, ax, subtitle=subtitle, failed_text=("FAILED" + (f": {note}" if note else "")) if failed else "")
        total = counts["pushed"]
        if total == 0:
            _no_data(ax, "no data (nothing pushed)")
            return failed
        left = 0
        handles = []
        for name, count, colour in segments:
            if count <= 0:
                continue
            ax.barh([0], [count], left=left, color=colour, height=0.55, edgecolor="white", linewidth=0.8)
            share = count / total
            if share >= 0.04:
                text = f"{name} {count:,}" if share >= 0.16 else f"{count:,}"
                ax.text(left + count / 2, 0, text, ha="center", va="center", color="white",
                        fontsize=8, fontweight="bold")
            handles.append(Patch(color=colour, label=f"{name} {count:,}"))
            left += count
        ax.set_yticks([0])
        ax.set_yticklabels([f"pushed {total:,}"])
        ax.set_ylim(-0.6, 0.6)
        ax.set_xlim(0, total)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        _plain_axis(ax.xaxis)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("messages")
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        return failed

    return _render(title, build, figsize=(FIGSIZE[0], 2.3))
