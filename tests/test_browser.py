"""The built book in a real browser, offline: every page of `_build/html` is opened in headless
Chromium (Debian's, with its chromedriver; never a downloaded browser) from a local HTTP server, with
every other host unreachable, and checked for JavaScript errors, typeset math, loaded images and
working interactive figures. `make test` builds the book first; this test only reads it.

    BSSN_BOOK_HTML=path/to/html  pytest tests/test_browser.py   # another build folder
"""
import functools
import os
import re
import shutil
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BSSN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SKIP_PAGES = {"search.html", "genindex.html", "py-modindex.html"}
CHROMIUM = ["/usr/bin/chromium", "chromium", "chromium-browser"]
CHROMEDRIVER = ["/usr/bin/chromedriver", "chromedriver"]
HOW_TO_BUILD = f"{HTML / 'index.html'} is missing: build the book first (`make book`; `make test` does it)"


def book_pages():
    if not (HTML / "index.html").is_file():
        return []
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if p.name not in SKIP_PAGES and not p.relative_to(HTML).parts[0].startswith("_"))


PAGES = book_pages()


def _which(candidates):
    for c in candidates:
        found = c if Path(c).is_file() else shutil.which(c)
        if found:
            return found
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of `_build/html` served over HTTP on 127.0.0.1 (a page must not rely on file://)."""
    if not (HTML / "index.html").is_file():
        pytest.fail(HOW_TO_BUILD)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver(site):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    chromium, chromedriver = _which(CHROMIUM), _which(CHROMEDRIVER)
    if not chromium or not chromedriver:
        pytest.fail("Debian's chromium and chromedriver are needed for the browser test and are not "
                    "installed: run `make browser-deps` (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="bssn-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--window-size=1200,900", f"--user-data-dir={profile}",
                # No network: every host except 127.0.0.1 goes to a port that refuses connections.
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths are given, so Selenium Manager (which could download a driver) is never used.
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_book_is_built():
    assert (HTML / "index.html").is_file(), HOW_TO_BUILD
    assert PAGES, f"no pages found in {HTML}"


@pytest.mark.parametrize("page", PAGES or ["(book not built)"])
def test_no_remote_scripts_or_styles(page):
    """The HTML itself: no <script src> and no style sheet <link href> on another host."""
    if not PAGES:
        pytest.fail(HOW_TO_BUILD)
    text = (HTML / page).read_text(encoding="utf-8")
    remote = [m.group(0) for m in re.finditer(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>", text)]
    for m in re.finditer(r"<link\b[^>]*>", text):
        tag = m.group(0)
        if re.search(r"rel=[\"']?(stylesheet|preload|modulepreload)", tag) and \
                re.search(r"href=[\"']?(?:https?:)?//", tag):
            remote.append(tag)
    assert not remote, f"{page} loads from elsewhere: {remote}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("nbs/")] or ["(book not built)"])
def test_launch_buttons(page):
    """Chapter pages open their source notebook in Colab and Binder, from pyproject's Repository URL."""
    if not PAGES:
        pytest.fail(HOW_TO_BUILD)
    import tomllib
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")
    owner_name = repo.split("github.com/", 1)[1]
    nb = page[:-len(".html")] + ".ipynb"
    assert (ROOT / nb).is_file(), f"{page} has no source notebook {nb}"
    text = (HTML / page).read_text(encoding="utf-8")
    assert f"https://colab.research.google.com/github/{owner_name}/blob/main/{nb}" in text
    assert f"https://mybinder.org/v2/gh/{owner_name}/main?urlpath=tree/{nb}" in text


WAIT_MATHJAX = """
const done = arguments[arguments.length - 1], t0 = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done("ok"), (e) => done("MathJax failed: " + e));
  } else if (Date.now() - t0 > 20000) {
    done("MathJax did not start within 20 s (script missing or blocked?)");
  } else { setTimeout(poll, 50); }
})();
"""

WAIT_IMAGES = """
const done = arguments[arguments.length - 1], t0 = Date.now();
const imgs = Array.from(document.images);
imgs.forEach((i) => { if (i.loading === "lazy") i.loading = "eager"; });
(function poll() {
  if (imgs.every((i) => i.complete) || Date.now() - t0 > 15000) {
    done(imgs.filter((i) => !(i.complete && i.naturalWidth > 0))
             .map((i) => (i.currentSrc || i.src || "(no src)").slice(0, 120)));
  } else { setTimeout(poll, 50); }
})();
"""

MATH_STATE = """
const math = Array.from(document.querySelectorAll(".math"));
const body = document.body.cloneNode(true);
body.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight").forEach((e) => e.remove());
return {
  n_math: math.length,
  n_mjx: document.querySelectorAll("mjx-container").length,
  untypeset: math.filter((m) => !m.querySelector("mjx-container")).map((m) => m.textContent.slice(0, 80)),
  errors: Array.from(document.querySelectorAll("mjx-merror")).map((e) => e.textContent.slice(0, 80)),
  raw_dollars: (body.textContent.match(/.{0,40}\\$\\$.{0,40}/g) || []),
};
"""

RESOURCES = """
return performance.getEntriesByType("resource").map((r) => r.name)
  .concat([location.href]).filter((u) => !u.startsWith(location.origin + "/") && !u.startsWith("data:"));
"""

# For each interactive figure and each of its controls: the image src for every value of the control
# (the other controls at their defaults), then the control back to its default.
INTERACTIVE = """
const figs = Array.from(document.querySelectorAll("[data-bssn-interactive]"));
return figs.map((fig) => {
  const img = fig.querySelector("img");
  const ctrls = Array.from(fig.querySelectorAll("[data-bssn-param]"));
  const res = {id: fig.id, frames: parseInt(fig.getAttribute("data-bssn-interactive"), 10),
               has_img: !!img, controls: []};
  if (!img) return res;
  const set = (c, v) => {
    if (c.tagName === "SELECT") c.selectedIndex = v; else c.value = String(v);
    c.dispatchEvent(new Event("input", {bubbles: true}));
    c.dispatchEvent(new Event("change", {bubbles: true}));
  };
  ctrls.forEach((c) => {
    const n = c.tagName === "SELECT" ? c.options.length : parseInt(c.max, 10) + 1;
    const start = img.src, srcs = [];   // the page's default frame, before any control moved
    for (let v = 0; v < n; v++) { set(c, v); srcs.push(img.src); }
    set(c, 0);
    res.controls.push({param: c.getAttribute("data-bssn-param"), tag: c.tagName, n: n,
                       distinct: new Set(srcs).size, back_to_default: img.src === start});
  });
  return res;
});
"""


# Code cells a reader sees (not folded) whose lines are wider than the page: a horizontal scrollbar.
CODE_OVERFLOW = """
return Array.from(document.querySelectorAll("div.cell_input pre"))
  .filter((p) => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1)
  .map((p) => ({first: p.textContent.split("\\n")[0].slice(0, 60), over: p.scrollWidth - p.clientWidth}));
"""


@pytest.mark.parametrize("page", PAGES or ["(book not built)"])
def test_page_in_browser(driver, site, page):
    if not PAGES:
        pytest.fail(HOW_TO_BUILD)
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(site + page)
    t0 = time.time()
    while driver.execute_script("return document.readyState") != "complete" and time.time() - t0 < 30:
        time.sleep(0.05)
    problems = []

    has_math = driver.execute_script("return document.querySelector('.math') !== null")
    if has_math:
        status = driver.execute_async_script(WAIT_MATHJAX)
        if status != "ok":
            problems.append(status)
        else:
            m = driver.execute_script(MATH_STATE)
            if not m["n_mjx"]:
                problems.append("math on the page but no mjx-container: MathJax typeset nothing")
            if m["untypeset"]:
                problems.append(f"{len(m['untypeset'])} math elements not typeset, e.g. {m['untypeset'][:3]}")
            if m["errors"]:
                problems.append(f"TeX errors: {m['errors'][:5]}")
            if m["raw_dollars"]:
                problems.append(f"raw $$ left in the text: {m['raw_dollars'][:3]}")

    broken = driver.execute_async_script(WAIT_IMAGES)
    if broken:
        problems.append(f"{len(broken)} images did not load: {broken[:5]}")

    initial = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-bssn-interactive] img')).map((i) => i.src)")
    for k, fig in enumerate(driver.execute_script(INTERACTIVE)):
        if not fig["has_img"] or not fig["controls"]:
            problems.append(f"interactive figure {fig['id']} has no image or no controls")
            continue
        for c in fig["controls"]:
            if c["n"] > 1 and c["distinct"] < 2:
                problems.append(f"figure {fig['id']}: changing control {c['param']} ({c['tag']}, "
                                f"{c['n']} values) never changes the image")
            if not c["back_to_default"]:
                problems.append(f"figure {fig['id']}: control {c['param']} back at its default "
                                "does not show the default image")
        if k < len(initial) and driver.execute_script(
                "return document.querySelectorAll('[data-bssn-interactive] img')[arguments[0]].src", k) != initial[k]:
            problems.append(f"figure {fig['id']}: all controls at their defaults do not show the first image")

    overflow = driver.execute_script(CODE_OVERFLOW)
    if overflow:
        problems.append(f"{len(overflow)} code cells scroll sideways (lines wider than the page), e.g. "
                        f"{overflow[:3]}")

    remote = driver.execute_script(RESOURCES)
    if remote:
        problems.append(f"requests to other hosts: {remote[:5]}")

    severe = [e["message"][:300] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    if severe:
        problems.append(f"browser console errors: {severe[:5]}")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
