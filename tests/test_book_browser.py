"""The whole book, built on the smoke profile, read page by page in headless Chromium.

The session fixture builds the book with `tools/smoke_book.py` (every chapter of
_toc.yml executed on the smoke profile, then a strict Sphinx build with execution off)
into `_build/smoke`, serves it over HTTP on 127.0.0.1 and opens every page of _toc.yml
in Chromium (Debian packages `chromium` and `chromium-driver`, driven by selenium).

For every page:
- it loads (a title, the article body, no failed request: no missing file of the book and
  nothing fetched from another host);
- math is typeset: every math element holds a MathJax container, no MathJax error, and no
  raw LaTeX (`\\(`, `\\[`, `$$`, `\\frac`...) in the text outside code;
- every image has loaded (naturalWidth > 0), and a page with a "Figure." caption shows at
  least one loaded image in its article;
- no output cell holds a traceback, a warning or a stray echoed value (a text/plain
  result that is only a number, a quoted string, a bool/None, a tuple or list of
  numbers, or an object repr such as `<Figure size 640x480 with 1 Axes>`);
- every internal link resolves (file and #anchor); on a chapter, the launch buttons
  (Binder, Colab) and the repository button point at _config.yml's repository and at a
  notebook that exists in it.

Set RMTLIB_SMOKE_BOOK=<folder> to reuse a smoke book already built there
(`<folder>/_build/html`). Without Chromium the tests are skipped, except under CI=1
(`.ci/run`), where `make test` has installed it and its absence is a failure.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socketserver
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import smoke_book  # noqa: E402

import _smoke_runs  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.notebooks]

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
PAGES = smoke_book.toc_files()
# Chapters rewritten on other branches while this test was written; the coordinator
# applies the presentation rules to them when merging, then removes them from here.
PENDING: set = set()

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")


def _require_browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver (chromium-driver)", DRIVER))
               if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium (test extra)")
    if missing:
        reason = f"no headless browser: {', '.join(missing)} not installed (make test installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; under CI this is an error")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def smoke_html(tmp_path_factory):
    """Folder of the built smoke book (built once per session unless RMTLIB_SMOKE_BOOK is set)."""
    _require_browser()
    given = os.environ.get("RMTLIB_SMOKE_BOOK")
    if given:
        html = Path(given) / "_build" / "html"
        assert html.is_dir(), f"RMTLIB_SMOKE_BOOK={given} holds no _build/html"
        return html, None
    out = ROOT / "_build" / "smoke"
    executed = out / "executed"
    start = time.perf_counter()
    for stem in smoke_book.toc_notebooks():  # shared with tests/test_notebooks.py: once per session
        assert _smoke_runs.executed(stem).parent == executed
    t_exec = time.perf_counter() - start
    src = smoke_book.stage(out, executed)
    rc, warnings, t_build = smoke_book.build(src, out)
    print(f"\nsmoke book: executed in {t_exec:.0f} s, built in {t_build:.0f} s ({len(warnings)} warnings)")
    return out / "_build" / "html", (rc, warnings)


def test_every_figure_was_drawn(smoke_html):
    """Each cell ending a figure with plt.show() holds an image (not an empty Agg show)."""
    html, _ = smoke_html
    src = html.parent.parent / "src"
    bad = {p: smoke_book.missing_figures(src / f"{p}.ipynb") for p in PAGES if (src / f"{p}.ipynb").is_file()}
    bad = {p: cells for p, cells in bad.items() if cells}
    assert not bad, f"cells that call plt.show() but show no figure: {bad}"


def test_smoke_book_builds_strictly(smoke_html):
    """Sphinx warnings fail the build (-W --keep-going lists all of them)."""
    html, result = smoke_html
    if result is None:
        pytest.skip("RMTLIB_SMOKE_BOOK given: the build was not run here")
    rc, warnings = result
    assert rc == 0 and not warnings, "strict build failed:\n" + "\n".join(warnings)


@pytest.fixture(scope="session")
def server(smoke_html):
    html, _ = smoke_html
    handler = functools.partial(_QuietHandler, directory=str(html))
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", html
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def driver(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


# ---------------------------------------------------------------------------------------
# what a page looks like to a reader, gathered once per page

ECHO_PATTERNS = [
    (r"[-+]?(\d[\d_,]*\.?\d*|\.\d+)([eE][-+]?\d+)?%?", "a number"),
    (r"np\.\w+\(.*\)|array\(.*\)|tensor\(.*\)", "a numpy/torch value"),
    (r"'[^'\n]*'|\"[^\"\n]*\"", "a quoted string"),
    (r"True|False|None", "a bool/None"),
    (r"[\(\[]\s*([-+]?[\d.eE+-]+\s*,\s*)*[-+]?[\d.eE+-]*\s*,?\s*[\)\]]", "a tuple/list of numbers"),
    (r"<[^<>\n]*( at 0x[0-9a-fA-F]+| with \d+ Axes|object)[^<>\n]*>", "an object repr"),
]


def stray_echo(text: str):
    """Why a text/plain output is a stray echoed value, or None."""
    t = text.strip()
    for pattern, what in ECHO_PATTERNS:
        if re.fullmatch(pattern, t, flags=re.S):
            return what
    return None


def test_echo_detector():
    for bad in ("0.06825", "0.5651846082098277", "'40% noise'", "8000", "2.149816737411591",
                "<Figure size 640x480 with 1 Axes>", "(0.1, 0.2)", "np.float64(0.5)", "True",
                "<pandas.io.formats.style.Styler at 0x7f3a2c1d0>"):
        assert stray_echo(bad), bad
    for good in ("device: cpu", "shuffled: 40.0%, labels actually changed: 36.1%",
                 "miniAlexNet, 0% noise: final training accuracy 91.0%"):
        assert stray_echo(good) is None, good


PAGE_JS = r"""
const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'NOSCRIPT']);
function rawTex() {
  const found = [];
  const root = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  let n;
  while ((n = walker.nextNode())) {
    let p = n.parentElement, inside = false;
    while (p) { if (skip.has(p.tagName) || (p.classList && p.classList.contains('cell_input'))) { inside = true; break; } p = p.parentElement; }
    if (inside) continue;
    const t = n.textContent;
    const m = t.match(/\\\(|\\\[|\$\$|\\(frac|sqrt|theta|sigma|nu|mathrm|text|left|right|begin)\b/);
    if (m) found.push(t.slice(Math.max(0, m.index - 30), m.index + 40));
  }
  return found;
}
function articleBody() {
  return document.querySelector('article.bd-article') || document.querySelector('article')
         || document.querySelector('main') || document.body;
}
const maths = Array.from(document.querySelectorAll('.math'));
const out = {
  title: document.title,
  article: !!document.querySelector('article, main, .bd-article'),
  math: maths.length,
  untypeset: maths.filter(e => !e.querySelector('mjx-container') && !e.closest('mjx-container')
                                && !e.matches('mjx-container')).map(e => e.textContent.slice(0, 60)),
  merrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 60)),
  raw: rawTex(),
  mathjax: typeof MathJax !== 'undefined' && !!MathJax.version ? MathJax.version : null,
  figures: document.querySelectorAll('.cell_output img').length,
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  // figure captions ("**Figure.** ...") and the images of the article that loaded (the
  // article itself: <main> also holds the header's launch-button logos)
  captions: (articleBody().textContent.match(/\bFigure\./g) || []).length,
  article_images: Array.from(articleBody().querySelectorAll('img'))
                  .filter(i => i.complete && i.naturalWidth > 0).length,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => ({href: a.getAttribute('href'), abs: a.href,
            cls: a.className, text: a.textContent.trim().slice(0, 40)})),
  outputs: Array.from(document.querySelectorAll('.cell_output .output')).map(o => ({
            cls: o.className,
            // the text of the output itself, without the copy button's label
            text: (o.querySelector('pre') || o).textContent.slice(0, 400)})),
  tracebacks: document.querySelectorAll('.cell_output .traceback, .cell_output .error').length,
};
return JSON.stringify(out);
"""


@functools.lru_cache(maxsize=None)
def _inspect(base, page, drv_id):
    drv = _DRIVERS[drv_id]
    url = urllib.parse.urljoin(base, page + ".html")
    drv.get_log("browser")  # drop the previous page's messages
    drv.get(url)
    # wait for MathJax to finish (its startup promise), at most 30 s
    drv.set_script_timeout(30)
    drv.execute_async_script("""
      const done = arguments[arguments.length - 1];
      if (typeof MathJax !== 'undefined' && MathJax.startup && MathJax.startup.promise) {
        MathJax.startup.promise.then(() => done(true), () => done(false));
      } else { setTimeout(() => done(false), 3000); }
    """)
    drv.execute_async_script("""
      const done = arguments[arguments.length - 1];
      Promise.all(Array.from(document.images).filter(i => !i.complete)
        .map(i => new Promise(r => { i.onload = i.onerror = r; }))).then(() => done(true));
    """)
    info = json.loads(drv.execute_script(PAGE_JS))
    info["console"] = [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    return info


_DRIVERS: dict = {}


@pytest.fixture
def page_info(driver, server):
    base, html = server
    _DRIVERS[id(driver)] = driver

    def get(page):
        assert (html / f"{page}.html").is_file(), f"{page}.html was not built"
        return _inspect(base, page, id(driver))

    return get


def pages(*, notebooks_only=False):
    out = []
    for p in PAGES:
        if notebooks_only and not (ROOT / f"{p}.ipynb").is_file():
            continue
        marks = [pytest.mark.xfail(reason=f"{p} is rewritten on another branch; presentation rules pending",
                                   strict=False)] if p in PENDING else []
        out.append(pytest.param(p, id=Path(p).name, marks=marks))
    return out


@pytest.mark.parametrize("page", pages())
def test_page_loads(page, page_info):
    info = page_info(page)
    assert info["title"] and info["article"], f"{page}: no title or article"
    # A request that failed: a missing file of the book, or anything fetched from another
    # host (the book must read offline). Script errors of the theme itself are not ours.
    failed = [m for m in info["console"] if ("Failed to load resource" in m or "net::ERR" in m)
              and "/favicon.ico" not in m]  # the browser asks for it by itself; the book has none
    assert not failed, f"{page}: requests failed (missing file, or network needed): {failed}"


@pytest.mark.parametrize("page", pages())
def test_math_is_typeset(page, page_info):
    info = page_info(page)
    if info["math"]:
        assert info["mathjax"], f"{page}: MathJax did not load (served from _static/mathjax)"
    assert not info["untypeset"], f"{page}: math left as text: {info['untypeset'][:5]}"
    assert not info["merrors"], f"{page}: MathJax errors: {info['merrors'][:5]}"
    assert not info["raw"], f"{page}: raw LaTeX in the visible text: {info['raw'][:5]}"


@pytest.mark.parametrize("page", pages())
def test_images_loaded(page, page_info):
    info = page_info(page)
    broken = [i["src"] for i in info["images"] if not i["ok"]]
    assert not broken, f"{page}: images that did not load: {broken}"
    # "no broken image" holds trivially on a page without images (a kernel that drew with
    # Agg leaves none): a page that captions a figure must show one
    if info["captions"]:
        assert info["article_images"] > 0, (
            f"{page}: {info['captions']} 'Figure.' caption(s) but no loaded image in the article")
    if (ROOT / f"{page}.ipynb").is_file():
        assert info["figures"] > 0, f"{page}: a chapter without a single figure in its outputs"


@pytest.mark.parametrize("page", pages(notebooks_only=True))
def test_outputs_are_clean(page, page_info):
    info = page_info(page)
    problems = []
    if info["tracebacks"]:
        problems.append(f"{info['tracebacks']} traceback/error output(s)")
    for out in info["outputs"]:
        cls, text = out["cls"], out["text"]
        if "Traceback (most recent call last)" in text or re.search(r"\b\w+Error\b:", text):
            problems.append(f"traceback: {text[:120]!r}")
        elif "stderr" in cls and re.search(r"warn|error", text, flags=re.I):
            problems.append(f"warning: {text[:120]!r}")
        elif re.search(r"\b\w*Warning\b:", text):
            problems.append(f"warning: {text[:120]!r}")
        elif "text_plain" in cls and (why := stray_echo(text)):
            problems.append(f"stray echoed value ({why}): {text.strip()[:80]!r}")
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def _repo_parts():
    url = CONFIG["repository"]["url"].rstrip("/")
    owner, name = url.split("github.com/")[1].split("/")[:2]
    return url, owner, name, CONFIG["repository"].get("branch", "main")


@pytest.mark.parametrize("page", pages())
def test_internal_links_resolve(page, page_info, server):
    base, html = server
    info = page_info(page)
    bad = []
    texts: dict = {}
    for link in info["links"]:
        abs_url = link["abs"]
        if not abs_url.startswith(base):
            continue
        parsed = urllib.parse.urlparse(abs_url)
        rel = urllib.parse.unquote(parsed.path[len(urllib.parse.urlparse(base).path):]) or "index.html"
        target = html / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(f"{link['href']} (no file {rel})")
            continue
        if parsed.fragment and target.suffix == ".html":
            text = texts.setdefault(target, target.read_text(errors="replace"))
            frag = urllib.parse.unquote(parsed.fragment)
            if f'id="{frag}"' not in text and f"name=\"{frag}\"" not in text:
                bad.append(f"{link['href']} (no anchor #{frag} in {rel})")
    assert not bad, f"{page}: internal links that do not resolve: {sorted(set(bad))}"


@pytest.mark.parametrize("page", pages(notebooks_only=True))
def test_launch_buttons_point_at_the_repository(page, page_info):
    url, owner, name, branch = _repo_parts()
    info = page_info(page)
    hrefs = [l["abs"] for l in info["links"]]
    notebook = f"{page}.ipynb"
    assert (ROOT / notebook).is_file()
    binder = [h for h in hrefs if "mybinder.org" in h or CONFIG["launch_buttons"]["binderhub_url"] in h]
    colab = [h for h in hrefs if "colab.research.google.com" in h]
    assert binder, f"{page}: no Binder launch button"
    assert colab, f"{page}: no Colab launch button"
    for h in binder:
        assert f"/v2/gh/{owner}/{name}/{branch}" in h, f"{page}: Binder button {h} is not {url}@{branch}"
        assert notebook in urllib.parse.unquote(h), f"{page}: Binder button {h} does not open {notebook}"
    assert "lab" in urllib.parse.unquote(binder[0]), f"{page}: Binder should open JupyterLab ({binder[0]})"
    for h in colab:
        assert h.endswith(f"/github/{owner}/{name}/blob/{branch}/{notebook}"), f"{page}: Colab button {h}"
    assert any(h.rstrip("/") == url for h in hrefs), f"{page}: no repository button to {url}"
