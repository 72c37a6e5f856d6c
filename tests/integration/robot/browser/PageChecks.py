"""Checks of an HTML report page open in SeleniumLibrary's browser, for ``report_pages.robot``.

Each check looks at the whole page at once and fails with every problem it found, each naming
the page and the element (a chart's id and label, an image's address), so that a failure in CI
says what a reader would have seen broken without opening the screenshot.

The browser is SeleniumLibrary's current one (``Get Library Instance``); the browser console is
read with ``driver.get_log('browser')``, which needs the ``goog:loggingPrefs`` capability that
`Headless Chromium Options` sets.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.libraries.BuiltIn import BuiltIn
from robot.utils import timestr_to_secs
from selenium.common.exceptions import TimeoutException
from selenium.webdriver import ChromeOptions
from selenium.webdriver.support.ui import WebDriverWait

#: Address schemes a self-contained page may load from: its own files and inline data.
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")

_IS_ROBOT_LOG = """
return typeof window.expandAll === 'function' && typeof window.testdata === 'object'
    && document.getElementById('s1') !== null;
"""

#: One chunk (at most ``arguments[0]`` ms) of opening every suite, test and keyword of a Robot
#: log with the log's own functions, breadth first: ``expandElement`` draws an element's children
#: and opens it, ``callWhenChildrenReady`` waits for a split log's keyword file. What the log's
#: ``expandAll`` does, but without a timer tick and a layout between two elements. Returns
#: [elements left, elements opened, headers still closed, headers].
_EXPAND_LOG_CHUNK = """
const budget = arguments[0];
let state = window.apexLogExpansion;
if (!state) {
    state = window.apexLogExpansion = {queue: [window.testdata.findLoaded('s1')], waiting: 0, opened: 0};
}
const started = performance.now();
while (state.queue.length && performance.now() - started < budget) {
    const element = state.queue.shift();
    expandElement(element);
    state.opened++;
    state.waiting++;
    element.callWhenChildrenReady(function () {
        state.waiting--;
        for (const child of element.children() || []) {
            if (child.type !== 'message') state.queue.push(child);
        }
    });
}
return [state.queue.length + state.waiting, state.opened,
        document.querySelectorAll('#s1 .element-header.closed').length,
        document.querySelectorAll('#s1 .element-header').length];
"""

_IMAGES_SETTLED = """
for (const img of document.images) {
    if (img.loading === 'lazy') img.loading = 'eager';  // a reader scrolling would load it
}
return Array.from(document.images).every(img => img.complete);
"""

_BROKEN_IMAGES = """
const describe = img => (img.id ? '#' + img.id + ' ' : '') + (img.getAttribute('src') || '(no src)').slice(0, 120);
return Array.from(document.images).flatMap(img => {
    if (!img.complete) return [describe(img) + ': still loading'];
    if (img.naturalWidth === 0) return [describe(img) + ': did not load (naturalWidth 0)'];
    return [];
});
"""

_LOADED_URLS = """
const urls = performance.getEntriesByType('resource').map(e => [e.initiatorType || 'resource', e.name]);
const loading = 'stylesheet icon preload prefetch modulepreload manifest apple-touch-icon'.split(' ');
for (const el of document.querySelectorAll('[src]')) urls.push([el.localName, el.src]);
for (const el of document.querySelectorAll('link[href]')) {
    if ((el.rel || '').toLowerCase().split(/\\s+/).some(rel => loading.includes(rel))) urls.push(['link', el.href]);
}
for (const el of document.querySelectorAll('image[href], use[href]')) {
    const href = el.href && el.href.baseVal !== undefined ? el.href.baseVal : el.getAttribute('href');
    if (href && !href.startsWith('#')) urls.push([el.localName, new URL(href, document.baseURI).href]);
}
return urls;
"""

_CHARTS = """
const minSize = arguments[0];
const shapes = 'path, line, polyline, polygon, rect, circle, ellipse, text, image, use';
const notDrawn = 'defs, clipPath, clippath, mask, marker, pattern, symbol';
const label = el => {
    const title = el.querySelector(':scope > title');
    const text = el.getAttribute('aria-label') || (title && title.textContent) || el.getAttribute('alt')
        || el.getAttribute('data-title') || '';
    return text.trim().replace(/\\s+/g, ' ').slice(0, 80);
};
const describe = (el, index) => {
    const id = el.id ? '#' + el.id : '';
    const text = label(el);
    return 'chart ' + (index + 1) + ' <' + el.localName + id + '>' + (text ? ' "' + text + '"' : '');
};
const svgDrawn = svg => Array.from(svg.querySelectorAll(shapes)).some(shape => {
    if (shape.closest(notDrawn)) return false;
    try {
        const box = shape.getBBox();
        return box.width > 0 || box.height > 0;
    } catch (error) {
        return false;
    }
});
const imgDrawn = img => img.complete && img.naturalWidth > 0;
const drawn = el => {
    if (el.localName === 'svg') return svgDrawn(el);
    if (el.localName === 'img') return imgDrawn(el);
    return Array.from(el.querySelectorAll('svg')).some(svgDrawn)
        || Array.from(el.querySelectorAll('img')).some(imgDrawn);
};
return Array.from(document.querySelectorAll('.apex-chart')).map((el, index) => {
    const problems = [];
    const visible = el.checkVisibility({
        checkOpacity: true, checkVisibilityCSS: true, opacityProperty: true, visibilityProperty: true,
    });
    if (!visible) problems.push('not visible (display:none, visibility:hidden or opacity 0, on it or a parent)');
    const box = el.getBoundingClientRect();
    if (!(box.width > minSize && box.height > minSize)) {
        problems.push('box ' + Math.round(box.width) + 'x' + Math.round(box.height) + ' px, needs more than '
            + minSize + 'x' + minSize);
    }
    if (!drawn(el)) {
        problems.push(el.localName === 'img' ? 'image did not load (naturalWidth 0)'
            : 'nothing drawn (no path, line, rect or text with a size)');
    }
    return [describe(el, index), problems];
});
"""


class PageChecks:
    """Checks of the page open in SeleniumLibrary's current browser."""

    ROBOT_LIBRARY_SCOPE = "GLOBAL"

    def __init__(self) -> None:
        self._profiles: list[str] = []

    # ----------------------------------------------------------------- the browser

    def headless_chromium_options(self, binary: str, *arguments: str) -> ChromeOptions:
        """Options for Debian's Chromium at ``binary``: ``arguments`` (headless ones), a fresh
        profile directory (see `Remove Chromium Profiles`), and the console log kept for
        `Browser Console Should Show No Errors`.

        The binary is named so that Selenium Manager never looks for (or downloads) a browser.
        """
        profile = tempfile.mkdtemp(prefix="apex-chromium-")
        self._profiles.append(profile)
        options = ChromeOptions()
        options.binary_location = binary
        for argument in arguments:
            options.add_argument(argument)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        return options

    def remove_chromium_profiles(self) -> None:
        """Remove the profile directories `Headless Chromium Options` made (close the browsers first)."""
        while self._profiles:
            shutil.rmtree(self._profiles.pop(), ignore_errors=True)

    def page_url(self, page: str) -> str:
        """The ``file://`` address of ``page``, a path (relative ones to the current directory)."""
        return Path(page).resolve().as_uri()

    def minimum_charts(self, page: str, minimums: dict[str, Any] | None = None) -> int:
        """How many charts ``page`` must show: ``minimums`` keyed by the path as given or by the
        file name (``summary.html``); 0 when it names neither."""
        minimums = minimums or {}
        for key in (page, Path(page).name):
            if key in minimums:
                return int(minimums[key])
        return 0

    def fit_viewport_to_page(self, max_height: int = 16000) -> None:
        """Make the viewport as high as the page (at most ``max_height`` px), scrolled to the top,
        so that ``Capture Page Screenshot`` takes the whole page; `Restore Viewport` undoes it.

        Chromium's device metrics are overridden (DevTools ``Emulation``) rather than the window
        resized: a headless window taller than a few thousand pixels takes its size late.
        """
        width, height = self._driver.execute_script(
            "window.scrollTo(0, 0);"
            "return [window.innerWidth, Math.max(document.documentElement.scrollHeight, window.innerHeight)];"
        )
        height = min(int(height), int(max_height))
        metrics = {"width": int(width), "height": height, "deviceScaleFactor": 1, "mobile": False}
        self._driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def restore_viewport(self) -> None:
        """Give the viewport the window's size back (after `Fit Viewport To Page`)."""
        self._driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # ----------------------------------------------------------------- the page

    def page_should_have_loaded(self) -> None:
        """The browser shows the page: no ``chrome-error://`` page (a file that could not be read)
        and a title that is not empty."""
        href, title, url = self._driver.execute_script("return [location.href, document.title, document.URL];")
        if href.startswith("chrome-error://"):
            raise AssertionError(f"{_name(url)}: the browser could not open {url} (it shows {href})")
        if not title.strip():
            raise AssertionError(f"{_name(url)}: the page has an empty title")

    def page_is_a_robot_log(self) -> bool:
        """Whether the page is a Robot Framework ``log.html`` (its scripts and top suite are there)."""
        return bool(self._driver.execute_script(_IS_ROBOT_LOG))

    def expand_every_log_element(self, timeout: str = "120 s") -> None:
        """Open every suite, test and keyword of the Robot log on the page, as its "Expand all"
        icon (``expandAll``) does, with the log's own functions, so that messages logged inside
        keywords (charts) are drawn. Fails saying how many were still closed after ``timeout``.

        ``expandAll`` itself opens one element per timer tick, with a layout in between: about
        30 ms an element on a busy two-core machine (a log of 3,700 keywords takes two minutes).
        This opens them in chunks of up to a second each, about 1.5 ms an element.
        """
        seconds = timestr_to_secs(timeout)
        started, before = time.monotonic(), -1
        while True:
            left, opened, closed, headers = self._driver.execute_script(_EXPAND_LOG_CHUNK, 1000)
            if left == 0:
                break
            if opened == before:
                time.sleep(0.05)  # waiting for a split log's keyword file: poll, do not spin
            before = opened
            if time.monotonic() - started > seconds:
                raise AssertionError(
                    f"{self._page}: {left} suites, tests and keywords still to open {seconds:g} s after "
                    f"starting to expand the log ({opened} opened; a bigger log needs a longer EXPAND_TIMEOUT)"
                )
        if closed:
            raise AssertionError(f"{self._page}: {closed} of {headers} suites, tests and keywords stayed closed")
        logger.info(f"{self._page}: {opened} suites, tests and keywords opened in {time.monotonic() - started:.1f} s")

    def every_image_should_have_loaded(self, timeout: str = "30 s") -> None:
        """Every ``<img>`` has finished loading (waiting up to ``timeout``) and has a picture
        (``naturalWidth > 0``); fails naming each broken one."""
        seconds = timestr_to_secs(timeout)
        try:
            WebDriverWait(self._driver, seconds).until(lambda driver: driver.execute_script(_IMAGES_SETTLED))
        except TimeoutException:
            pass  # reported below, image by image
        broken = self._driver.execute_script(_BROKEN_IMAGES)
        self._fail_with(broken, f"image(s) broken (waited up to {seconds:g} s)")

    def page_should_not_have_used_the_network(self) -> None:
        """Every resource the page loaded, or names in ``src``, ``<link>`` and SVG ``href``, is a
        ``file:``, ``data:``, ``about:`` or ``blob:`` address: the page is self-contained."""
        urls = self._driver.execute_script(_LOADED_URLS)
        remote = sorted({f"{kind} {url}" for kind, url in urls if not url.startswith(LOCAL_SCHEMES)})
        self._fail_with(remote, "resource(s) from the network (only file:, data:, about: and blob: are allowed)")

    def clear_browser_console_log(self) -> None:
        """Forget what the browser console has said so far (so the next page is judged alone)."""
        self._driver.get_log("browser")

    def browser_console_should_show_no_errors(self) -> None:
        """The browser console has no SEVERE entry since the last look: no script error, no
        resource that failed to load. Every entry is logged."""
        entries = self._driver.get_log("browser")
        for entry in entries:
            logger.info(f"console {entry.get('level')}: {entry.get('message')}")
        severe = [str(entry.get("message", "")) for entry in entries if entry.get("level") == "SEVERE"]
        self._fail_with(severe, "error(s) in the browser console")

    def every_chart_should_be_drawn(self, minimum: int = 0, min_size: int = 20) -> int:
        """Every ``.apex-chart`` is visible, its box wider and higher than ``min_size`` px, and drawn
        (an ``<svg>`` with a path, line, rect or text of some size; an ``<img>`` with a picture);
        there are at least ``minimum`` of them. Returns how many there are."""
        charts = self._driver.execute_script(_CHARTS, int(min_size))
        problems = [f"{chart}: {'; '.join(found)}" for chart, found in charts if found]
        if len(charts) < int(minimum):
            problems.insert(0, f"{len(charts)} chart(s) (.apex-chart), expected at least {int(minimum)}")
        self._fail_with(problems, "chart problem(s)")
        logger.info(f"{self._page}: {len(charts)} chart(s), all drawn")
        return len(charts)

    # ----------------------------------------------------------------- helpers

    @property
    def _driver(self) -> Any:
        return BuiltIn().get_library_instance("SeleniumLibrary").driver

    @property
    def _page(self) -> str:
        return _name(self._driver.execute_script("return document.URL;"))

    def _fail_with(self, problems: list[str], what: str) -> None:
        if problems:
            listed = "\n".join(f"- {problem}" for problem in problems)
            raise AssertionError(f"{self._page}: {len(problems)} {what}:\n{listed}")


def _name(url: str) -> str:
    """The file name of a page's address (``file:///tmp/out/log.html`` -> ``log.html``)."""
    return url.rstrip("/").rsplit("/", 1)[-1] or url
