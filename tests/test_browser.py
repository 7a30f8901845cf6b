"""The reports as a person sees them: rendered by Debian's headless
Chromium (tests/browser.py drives it over the DevTools protocol), checked
for what shows, with screenshots in reports/screens/ for people to look at.

The demo's page (the same run as tests/test_reports.py, shared through
conftest.py's `demo_report`): no console errors; at desktop width the
verdict is above the fold; each pair's buggy and fixed boxes side by side
at the same height; the detector table's links scroll to their pattern;
passing cases folded; the seeds' CJK text drawn with real glyphs.  A
gate's page with a server that does not start, and the leak-slope plot of
`run --load`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import Browser, Page, find_chromium

ROOT = Path(__file__).resolve().parent.parent
SCREENS = ROOT / "reports" / "screens"
# The same worker as tests/test_reports.py: the demo runs once for both.
pytestmark = [pytest.mark.valgrind, pytest.mark.xdist_group("reports")]
WIDTH, HEIGHT = 1280, 800


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if find_chromium() is None:
        pytest.fail("chromium is not installed: `make deps` installs it")
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def show(browser: Browser, page_path: Path) -> Page:
    page = browser.open(page_path.resolve().as_uri(), WIDTH, HEIGHT)
    assert page.evaluate("document.readyState") == "complete"
    return page


def element_clip(page: Page, selector: str) -> dict:
    return page.evaluate(f"""(() => {{
        const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
        return {{x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}};
    }})()""")


def test_demo_page_above_the_fold_and_without_errors(browser, demo_report) -> None:
    page = show(browser, demo_report[0] / "index.html")
    assert page.errors() == []
    top, bottom, fold, text = page.evaluate("""(() => {
        const v = document.getElementById('verdict'), r = v.getBoundingClientRect();
        return [r.top, r.bottom, innerHeight, v.innerText];
    })()""")
    assert 0 <= top and bottom <= fold, "the verdict summary is above the fold"
    assert "Leak-and-crash gate: passed" in text and "xfail" in text
    page.screenshot(SCREENS / "demo-desktop.png")


def test_each_pair_side_by_side_at_the_same_height(browser, demo_report) -> None:
    page = show(browser, demo_report[0] / "index.html")
    pairs = page.evaluate("""[...document.querySelectorAll('.pair')].filter(p => p.offsetParent).map(p => {
        const boxes = [...p.children].filter(c => c.classList.contains('variant'));
        return boxes.map(b => { const r = b.getBoundingClientRect();
            return {variant: b.dataset.variant, left: r.left, right: r.right, top: r.top,
                    height: r.height}; });
    })""")
    pair_patterns = [p for p in (ROOT / "servers").iterdir() if (p / "buggy.c").exists()]
    assert len(pairs) >= len(pair_patterns)
    for buggy, fixed in pairs:
        assert (buggy["variant"], fixed["variant"]) == ("buggy", "fixed")
        assert buggy["right"] <= fixed["left"], "side by side, buggy on the left"
        assert abs(buggy["top"] - fixed["top"]) < 1 and abs(buggy["height"] - fixed["height"]) < 1
        assert buggy["height"] > 50


def test_detector_table_links_scroll_to_their_pattern(browser, demo_report) -> None:
    page = show(browser, demo_report[0] / "index.html")
    landed = page.evaluate("""[...document.querySelectorAll('#detector-table a[href^="#"]')].map(a => {
        window.scrollTo(0, 0);
        a.click();
        const id = a.getAttribute('href').slice(1), target = document.getElementById(id);
        const r = target.getBoundingClientRect();
        return {id, hash: location.hash, top: r.top, tag: target.tagName,
                atBottom: scrollY + innerHeight >= document.documentElement.scrollHeight - 1,
                fold: innerHeight};
    })""")
    pair_patterns = [p.name for p in (ROOT / "servers").iterdir() if (p / "buggy.c").exists()]
    assert sorted(x["id"] for x in landed) == sorted(pair_patterns)
    for x in landed:
        assert x["hash"] == "#" + x["id"] and x["tag"] == "H2"
        # At the top of the window, or as high as the end of the page lets it go.
        assert abs(x["top"]) < 2 or (x["atBottom"] and 0 <= x["top"] < x["fold"]), x


def test_passing_cases_are_folded(browser, demo_report) -> None:
    page = show(browser, demo_report[0] / "index.html")
    folded = page.evaluate("""(() => {
        const all = [...document.querySelectorAll('details.passing')];
        const closed = all.every(d => !d.open);
        const failing = ['fail', 'xpass', 'timeout', 'unresolved'].map(o => `[data-outcome="${o}"]`);
        const failingInside = all.some(d => d.querySelector(['td.fails', ...failing].join(',')));
        const height = document.documentElement.scrollHeight;
        all.forEach(d => d.open = true);
        const unfolded = document.documentElement.scrollHeight;
        all.forEach(d => d.open = false);
        return {count: all.length, closed, failingInside, height, unfolded};
    })()""")
    assert folded["count"] >= 8 and folded["closed"] and not folded["failingInside"]
    assert folded["height"] < 2 / 3 * folded["unfolded"], folded
    SCREENS.mkdir(parents=True, exist_ok=True)
    (SCREENS / "page-heights.txt").write_text(
        f"demo report at {WIDTH} px: {folded['height']} px folded, {folded['unfolded']} px with "
        "every passing section open\n")
    page.screenshot(SCREENS / "demo-full.png", full_page=True)


def test_cjk_text_of_the_seeds_renders(browser, demo_report) -> None:
    match = subprocess.run(["fc-match", "Noto Sans CJK SC"], capture_output=True, text=True)
    assert "NotoSansCJK" in match.stdout, "fonts-noto-cjk is not installed: `make deps` installs it"
    page = show(browser, demo_report[0] / "index.html")
    glyphs = page.evaluate(r"""(() => {
        const cjk = /[\u3400-\u9fff]/;
        const seed = [...document.querySelectorAll('.seed')].find(e => cjk.test(e.textContent));
        if (!seed) return null;
        seed.id = 'cjk-seed';
        const style = getComputedStyle(seed);
        const chars = [...new Set([...seed.textContent].filter(c => cjk.test(c)))];
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 64;
        const g = canvas.getContext('2d', {willReadFrequently: true});
        g.font = `${style.fontStyle} 40px ${style.fontFamily}`;
        const draw = c => {
            g.clearRect(0, 0, 64, 64);
            g.fillText(c, 6, 48);
            const d = g.getImageData(0, 0, 64, 64).data;
            let hash = 0, ink = 0;
            for (let i = 3; i < d.length; i += 4)
                if (d[i]) { ink++; hash = (hash * 31 + i * d[i]) % 1000000007; }
            return [hash, ink];
        };
        const missing = draw('\uFFFF');      // a noncharacter: drawn as the box of a missing glyph
        const drawn = chars.map(draw);
        return {family: style.fontFamily, chars: chars.join(''),
                distinct: new Set(drawn.map(d => d[0])).size,
                inked: drawn.every(d => d[1] > 20),
                boxes: drawn.filter(d => d[0] === missing[0]).length};
    })()""")
    assert glyphs is not None, "no seed with CJK text on the page"
    assert "Noto Sans CJK" in glyphs["family"]
    assert len(glyphs["chars"]) >= 2
    # Boxes for missing glyphs all look alike: every character drawn differently, none a box.
    assert glyphs["distinct"] == len(glyphs["chars"]) and glyphs["inked"] and glyphs["boxes"] == 0, glyphs
    page.screenshot(SCREENS / "cjk-seed.png", clip=element_clip(page, "#cjk-seed"))


def test_a_server_that_does_not_start(browser, toy_server, tmp_path) -> None:
    out = tmp_path / "r"
    proc = harness("gate", "--cmd", f"{toy_server} die-at-start {{port}}", "--out", str(out))
    assert proc.returncode == 1
    page = show(browser, out / "index.html")
    assert page.errors() == []
    seen = page.evaluate("""(() => {
        const v = document.getElementById('verdict').getBoundingClientRect();
        const pre = document.querySelector('pre.startup'), r = pre.getBoundingClientRect();
        document.querySelector('#verdict a[href^="#case-"]').click();
        const box = document.getElementById('case-toy_server-echo').getBoundingClientRect();
        return {verdictBottom: v.bottom, fold: innerHeight, output: pre.innerText,
                outputHeight: r.height, boxTop: box.top, hash: location.hash,
                atBottom: scrollY + innerHeight >= document.documentElement.scrollHeight - 1,
                detectors: !!document.getElementById('detectors')};
    })()""")
    assert seen["verdictBottom"] <= seen["fold"]
    assert "toy_server: cannot start (on purpose)" in seen["output"] and seen["outputHeight"] > 10
    # The verdict's link leads to the failing case's box.
    assert seen["hash"] == "#case-toy_server-echo"
    assert abs(seen["boxTop"]) < 2 or (seen["atBottom"] and 0 <= seen["boxTop"] < seen["fold"])
    assert not seen["detectors"], "no detector-by-pattern section when no pair ran"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(SCREENS / "gate-startup-failure.png")


def test_the_leak_slope_is_a_picture(browser, build_dir, tmp_path) -> None:
    proc = harness("run", "fire_and_forget", "--load", "2,6", "--out", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    plot = Path(re.search(r"^plot: (.+)$", proc.stdout, re.M)[1])
    page = show(browser, plot if plot.is_absolute() else ROOT / plot)
    assert page.errors() == []
    svg = page.evaluate("""(() => {
        const svg = document.querySelector('svg.load-plot'), r = svg.getBoundingClientRect();
        const fit = svg.querySelector('line.fit');
        const at = x => { const [x1, y1, x2, y2] = ['x1', 'y1', 'x2', 'y2'].map(
            k => +fit.getAttribute(k)); return y1 + (y2 - y1) * (x - x1) / (x2 - x1); };
        const points = [...svg.querySelectorAll('circle.point')].map(
            c => ({cx: +c.getAttribute('cx'), cy: +c.getAttribute('cy')}));
        return {width: r.width, height: r.height, bottom: r.bottom, fold: innerHeight,
                slope: svg.querySelector('text.slope').textContent,
                points, offLine: points.map(p => Math.abs(at(p.cx) - p.cy))};
    })()""")
    assert svg["width"] > 300 and svg["height"] > 150 and svg["bottom"] <= svg["fold"]
    assert "368.0 bytes per connection" in svg["slope"]
    first, second = svg["points"]
    assert second["cx"] > first["cx"] and second["cy"] < first["cy"], "more connections, more bytes"
    assert max(svg["offLine"]) < 1.5, "the fitted line goes through the measured points"
    page.screenshot(SCREENS / "load-plot.png")
