"""Each kind of HTML report as a person sees it: opened from disk in headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by selenium), with no console error, no request but the
file itself, every figure drawn (an SVG with a laid-out box, visible paths, every `<use>` resolving
inside the page), and a full-page screenshot saved for review in results/screenshots/ (or
$PARASIM_SCREENSHOTS).

Each kind is opened twice: the page the CLI wrote (`--report`, or `parasim report` for the
comparison) with whatever figure sets this build registers, and the same result drawn with a toy
figure set, so that figures are checked even in a build that registers none for that kind.
Where Chromium, its driver or selenium is missing the tests skip, naming the package to install.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from report_fixtures import RUNS, make_results, use_toy_figures

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
DRIVER = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and Path(p).is_file()), None)
if CHROMIUM is None or DRIVER is None:
    pytest.skip("headless Chromium not found: install Debian's `chromium` and `chromium-driver` packages "
                "(apt-get install chromium chromium-driver; .ci/run does this when it can)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")

SHOTS = Path(os.environ.get("PARASIM_SCREENSHOTS") or REPO / "results" / "screenshots")
WIDTH = 1280
#: per figure: its svg's laid-out box, drawn paths outside <defs>, and <use> references that resolve nowhere
FIGURES_JS = """
return Array.from(document.querySelectorAll('figure')).map(f => {
  const s = f.querySelector('svg');
  if (!s) return {svg: false};
  const r = s.getBoundingClientRect();
  const drawn = Array.from(s.querySelectorAll('path')).filter(p => {
    if (p.closest('defs')) return false;
    const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length;
  const broken = Array.from(s.querySelectorAll('use')).filter(u => {
    const h = u.getAttribute('href') || u.getAttribute('xlink:href') || '';
    return !h.startsWith('#') || !document.getElementById(h.slice(1)); }).length;
  return {svg: true, width: r.width, height: r.height, drawn: drawn, broken: broken,
          title: (f.querySelector('h3') || {}).textContent || ''};
});
"""


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},900", "--hide-scrollbars", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    except Exception as e:  # a driver that does not match the browser, no display libraries, ...
        pytest.skip(f"headless Chromium did not start ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    "install matching Debian `chromium` and `chromium-driver` packages")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    results = make_results(folder)
    compare = folder / "comparison.html"
    r = run_cli("report", *[str(js) for js, _ in results.values()], "-o", str(compare))
    assert r.returncode == 0, r.stderr
    return results, compare


def visit(driver, path: Path, shot: str) -> dict:
    """Open `path`, return what the browser logged, requested and laid out; save the screenshot."""
    driver.get_log("browser")
    driver.get_log("performance")  # drop what earlier pages left
    url = path.resolve().as_uri()
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    requests = set()
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.add(msg["params"]["request"]["url"])
    figures = driver.execute_script(FIGURES_JS)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    text = driver.execute_script("return document.body.innerText")
    driver.set_window_size(WIDTH, min(int(height) + 120, 20000))
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    return {"url": url, "console": console, "requests": requests, "figures": figures, "text": text}


def check(seen: dict, figures_expected: int, headings: list[str]) -> None:
    assert seen["console"] == [], seen["console"]
    assert seen["requests"] <= {seen["url"]}, seen["requests"]  # nothing but the file itself
    assert len(seen["figures"]) == figures_expected
    for f in seen["figures"]:
        assert f["svg"] and f["width"] > 100 and f["height"] > 50, f
        assert f["drawn"] > 0 and f["broken"] == 0, f
    assert all(h in seen["text"] for h in headings), headings


SINGLE = ["Inputs", "Plan", "Expected error", "Summary", "Figures"]


def _toy_page(results: list[dict], folder: Path, monkeypatch, names: list[str] | None = None) -> tuple[Path, int]:
    from parasim.report.figures import figures_for
    from parasim.report.html import page

    use_toy_figures(monkeypatch)
    path = folder / "toy.html"
    path.write_text(page(results, names))
    return path, sum(len(figures_for(r)) for r in results)


@pytest.mark.parametrize("kind", list(RUNS))
def test_each_kind_of_report_renders_clean_with_every_figure_drawn(browser, saved, kind, tmp_path, monkeypatch):
    from parasim.report.figures import figures_for

    js, at_run_time = saved[0][kind]
    result = json.loads(js.read_text())
    check(visit(browser, at_run_time, f"report-{kind}"), len(figures_for(result)), SINGLE)
    toy, n = _toy_page([result], tmp_path, monkeypatch)
    assert n > 0
    check(visit(browser, toy, f"report-{kind}-toy-figures"), n, SINGLE)


def test_comparison_renders_clean_with_every_results_figures(browser, saved, tmp_path, monkeypatch):
    from parasim.report.figures import figures_for

    results = [json.loads(js.read_text()) for js, _ in saved[0].values()]
    headings = ["Headline metrics", "Inputs", "Plan", "Expected error"]
    check(visit(browser, saved[1], "report-comparison"), sum(len(figures_for(r)) for r in results), headings)
    toy, n = _toy_page(results, tmp_path, monkeypatch, names=[f"{k}.json" for k in RUNS])
    seen = visit(browser, toy, "report-comparison-toy-figures")
    check(seen, n, headings)
    assert all(f"{k}.json" in seen["text"] for k in RUNS)
