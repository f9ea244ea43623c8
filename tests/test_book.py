"""The book as a product: the smoke build's pages, offline assets, downloads, gallery, status,
and a real browser that renders every page with no request leaving the machine."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urljoin, urlparse

import pytest
from book_toc import chapters, toc_files
from bs4 import BeautifulSoup
from conftest import ARTIFACTS, ROOT, TOC
from sphinx.errors import ConfigError as SphinxConfigError

from igrlib.io import figures

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import igr_book  # noqa: E402  (the book's Sphinx extension)

pytestmark = pytest.mark.book

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SCREENSHOT = ARTIFACTS / "screenshot-intro.png"
#: Every page is looked at on a laptop and on a phone; full-page screenshots of each go to
#: build/screenshots/<set>/<width>/ (``IGR_SCREENSHOT_SET``, default "latest": e.g. before/after).
WIDTHS = (1280, 390)
SCREENSHOTS = ARTIFACTS / "screenshots" / os.environ.get("IGR_SCREENSHOT_SET", "latest")
MAX_SHOT_HEIGHT = 12000  # px: long chapters are cut here, enough to see tables and figures


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(), "html.parser")


def page(html: Path, entry: str) -> Path:
    return html / f"{entry.removesuffix('.md')}.html"


def is_remote(url: str | None) -> bool:
    return bool(url) and (url.startswith("//") or urlparse(url).scheme in {"http", "https"})


def test_each_profile_has_its_own_execution_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MPLBACKEND", raising=False)
    app = SimpleNamespace(outdir=str(tmp_path / "_build" / "html"))
    for profile in ("smoke", "paper"):
        monkeypatch.setenv("IGR_PROFILE", profile)
        config = SimpleNamespace(nb_execution_cache_path="", igr_profile="")
        igr_book.check_environment(app, config)
        assert config.igr_profile == profile
        assert config.nb_execution_cache_path == str(tmp_path / "_build" / ".jupyter_cache" / profile)
    config = SimpleNamespace(nb_execution_cache_path="/cache", igr_profile="")
    igr_book.check_environment(app, config)
    assert config.nb_execution_cache_path == "/cache/paper"


def test_bad_profile_or_text_backend_stops_the_build(monkeypatch, tmp_path: Path, caplog) -> None:
    app = SimpleNamespace(outdir=str(tmp_path))
    monkeypatch.setenv("IGR_PROFILE", "huge")
    with pytest.raises(SphinxConfigError, match="unknown profile 'huge'"):
        igr_book.check_environment(app, SimpleNamespace(nb_execution_cache_path=""))
    monkeypatch.setenv("IGR_PROFILE", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    igr_book.check_environment(app, SimpleNamespace(nb_execution_cache_path=""))
    assert "MPLBACKEND=Agg" in caplog.text  # a warning, so an error under -W


def test_placeholder_repository_hides_binder_and_repository_buttons(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("IGR_PROFILE", "smoke")
    app = SimpleNamespace(outdir=str(tmp_path))
    for url, shown in (("", False), ("https://github.com/executablebooks/jupyter-book", False),
                       ("https://github.com/someone/igr-book", True)):
        theme = {"repository_url": url, "use_repository_button": False,
                 "launch_buttons": {"binderhub_url": "https://mybinder.org"}}
        config = SimpleNamespace(nb_execution_cache_path="", html_theme_options=theme)
        igr_book.check_environment(app, config)
        opts = config.html_theme_options
        assert opts["use_repository_button"] is shown
        assert bool(opts["repository_url"]) is shown
        assert bool(opts["launch_buttons"]) is shown


def fake_env() -> SimpleNamespace:
    """The parts of a Sphinx environment that the notebook cleaner reads."""
    from docutils.nodes import Text
    return SimpleNamespace(
        domaindata={"std": {"labels": {"fig-a": ("book/mnist_igr", "fig-a", "")}},
                    "math": {"objects": {"modified-loss": ("book/tour", 1)}}},
        toc_fignumbers={"book/mnist_igr": {"figure": {"fig-a": (4, 2)}},
                        "book/tour": {"displaymath": {"equation-modified-loss": (2, 1)}}},
        titles={"book/bea": Text("Backward error analysis")})


@pytest.mark.parametrize("role, content, plain", [
    ("numref", "fig-a", "Figure 4.2"),
    ("numref", "panel %s <fig-a>", "panel 4.2"),
    ("eq", "modified-loss", "(2.1)"),
    ("cite", "barrett2021implicit,cohen2021gradient", "[barrett2021implicit, cohen2021gradient]"),
    ("doc", "bea", "[Backward error analysis](bea.ipynb)"),
    ("doc", "the BEA chapter <bea>", "[the BEA chapter](bea.ipynb)"),
    ("math", r"\lambda", r"\lambda"),
])
def test_myst_roles_become_plain_markdown(role: str, content: str, plain: str) -> None:
    assert igr_book.plain_role(fake_env(), "book/mnist_igr", role, content) == plain


def test_downloaded_notebook_is_cleaned(tmp_path: Path) -> None:
    import nbformat
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("As {numref}`fig-a` shows, see {doc}`bea`.\n\n$$\nE\n$$ (modified-loss)"),
        nbformat.v4.new_code_cell("x = '{numref}`kept in code`'")])
    path = tmp_path / "mnist_igr.ipynb"
    nbformat.write(notebook, path)
    igr_book.clean_notebook(path, fake_env(), "book/mnist_igr")
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == "As Figure 4.2 shows, see [Backward error analysis](bea.ipynb).\n\n$$\nE\n$$"
    assert cells[1].source == "x = '{numref}`kept in code`'"


def test_every_toc_page_is_built(smoke_book: Path) -> None:
    missing = [e for e in toc_files(TOC) if not page(smoke_book, e).exists()]
    assert not missing, f"pages listed in {TOC.name} but not built: {missing}"
    assert (smoke_book / "index.html").exists()


def test_no_script_stylesheet_or_image_from_the_network(smoke_book: Path) -> None:
    offenders = []
    for html in sorted(smoke_book.rglob("*.html")):
        doc = soup(html)
        for tag in doc.find_all(["script", "img", "iframe", "source", "video", "audio"]):
            if is_remote(tag.get("src")):
                offenders.append((html.name, str(tag)[:120]))
        for tag in doc.find_all("link"):
            if is_remote(tag.get("href")) and set(tag.get("rel", [])) & {
                    "stylesheet", "preload", "modulepreload", "icon", "prefetch", "manifest"}:
                offenders.append((html.name, str(tag)[:120]))
        for block in doc.find_all(["script", "style"]):
            if re.search(r"https?://", block.string or ""):
                offenders.append((html.name, (block.string or "")[:120]))
    css = [p for p in smoke_book.rglob("*.css") if re.search(r"(url\(|@import)\s*['\"]?https?://",
                                                             p.read_text(errors="replace"))]
    assert not offenders, offenders
    assert not css, f"stylesheets importing from the network: {css}"


def test_mathjax_is_served_locally(smoke_book: Path) -> None:
    mathjax = smoke_book / "_static" / "mathjax"
    assert (mathjax / "tex-chtml.js").is_file()
    assert any((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff")), "no fonts"
    pages_with_math = 0
    for entry in toc_files(TOC):
        doc = soup(page(smoke_book, entry))
        if not doc.select(".math"):
            continue
        pages_with_math += 1
        sources = [s["src"] for s in doc.find_all("script", src=True) if "mathjax" in s["src"].lower()]
        assert len(sources) == 1 and sources[0].split("?")[0].endswith("_static/mathjax/tex-chtml.js"), \
            (entry, sources)
    assert pages_with_math >= 2, "the intro and the tour carry equations"


def test_each_chapter_offers_its_executed_notebook(smoke_book: Path) -> None:
    names = chapters(TOC)
    assert names, "no executable chapter in the toc"
    for name in names:
        ipynb = smoke_book / "_sources" / "book" / f"{name}.ipynb"
        assert ipynb.is_file(), f"{name}: no .ipynb download"
        cells = json.loads(ipynb.read_text())["cells"]
        assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), \
            f"{name}.ipynb holds no outputs"
        markdown = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        left = igr_book.MYST_ROLE.findall(markdown) + igr_book.MYST_EQ_LABEL.findall(markdown)
        assert not left, f"{name}.ipynb keeps MyST syntax Jupyter cannot render: {left[:5]}"
        links = [a.get("href", "") for a in soup(smoke_book / "book" / f"{name}.html").find_all("a")]
        assert any(h.endswith(f"_sources/book/{name}.ipynb") for h in links), f"{name}: no link"


def test_gallery_shows_every_saved_figure_in_both_variants(smoke_book: Path) -> None:
    index = figures.read_index("smoke")
    if "book/tour" in toc_files(TOC):
        assert "tour-modified-loss" in index
    gallery = soup(smoke_book / "book" / "gallery.html")
    base = "book/gallery.html"
    hrefs_all = [a["href"] for a in gallery.find_all("a", href=True)]
    assert not [h for h in hrefs_all if "figures/cpu/" in h or "figures/paper/" in h], \
        "the smoke build's gallery links another profile's figures"
    for fig_id, entry in index.items():
        section = gallery.find(id=f"gallery-{fig_id}")
        assert section is not None, f"{fig_id} missing from the gallery"
        assert entry["profile"] == "smoke" and "smoke" in section.get_text()
        assert entry["caption"] in section.get_text()
        hrefs = {a["href"] for a in section.find_all("a", href=True)}
        assert set(entry["variants"]) == {"paper", "slide"}, fig_id
        for variant in entry["variants"].values():
            for name in variant["files"].values():
                href = next(h for h in hrefs if h.endswith(f"figures/smoke/{name}"))
                assert (smoke_book / urljoin(base, href)).is_file(), href
        assert section.find("img")["src"].endswith(f"figures/smoke/{fig_id}.png")


def test_every_saved_figure_is_legible(smoke_book: Path) -> None:
    """Every chapter's figure, as saved from the smoke run: no text over another text, a 16:9
    slide with projection-size fonts and nothing cut at its edge, no paper text below 8 pt."""
    assert figures.read_index("smoke"), "no figure was saved"
    problems = figures.illegible("smoke")
    assert not problems, problems


def test_status_page_reports_the_build(smoke_book: Path) -> None:
    status = soup(smoke_book / "book" / "status.html")
    text = status.get_text(" ")
    assert re.search(r"profile\s+smoke", text)
    assert re.search(rf"jax\s+{re.escape(metadata.version('jax'))}", text)
    assert re.search(r"device\s+\d+ × \S+", text)
    rows = {a["href"].split("#")[0]: a.find_parent("tr").get_text(" ")
            for a in status.select("table a[href]") if a.find_parent("tr")}
    index = figures.read_index("smoke")
    for name in chapters(TOC):
        row = rows.get(f"{name}.html")
        assert row is not None, f"{name} missing from the execution table"
        # nbval executed it; the build took its outputs from the primed cache
        assert row.split()[-1] == "ok" and "from the cache" in row, row
        source = (ROOT / "book" / f"{name}.md").read_text()
        stored = [e["runs"] for i, e in index.items() if e["runs"] and f'"{i}"' in source]
        if stored:
            assert re.search(r"rendered \d+ stored records computed \d{4}-\d\d-\d\d", row), row
            assert all(c[:12] in row for r in stored for c in r["commits"]), row
        else:
            assert "no stored runs: computed as the chapter executed, or read from its own files" in row, row


# --- a real browser ----------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-default-apps", "--disable-extensions", "--no-proxy-server",
    "--window-size=1280,1000",
    # the browser's own background lookups (account, clock) resolve to nothing, so nothing it
    # does can reach the network; what the pages request is checked below, not assumed
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

# Runs in each page: waits for MathJax and every image, then reports what rendered.
PAGE_REPORT_JS = r"""(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, .highlight').forEach(e => e.remove());
  const math = [...main.querySelectorAll('.math')];
  return {
    images: imgs.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight})),
    outputImages: main.querySelectorAll('.cell_output img').length,
    outputTables: main.querySelectorAll('.cell_output table').length,
    math: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    rawTex: (prose.innerText.match(/\$\$|\\begin\{|\\\[|\\\(/g) || []).length,
    figureAsText: (main.innerText.match(/<Figure size [^>]*>/g) || []),
    // how far the page itself scrolls sideways: wide tables and equations must scroll in their box
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  };
})()"""

# Clicks the first figure of the page: the full-size view must open, in the page.
LIGHTBOX_JS = r"""(() => {
  const img = document.querySelector('.bd-article img.igr-zoomable');
  if (!img) return null;
  img.click();
  const box = document.querySelector('.igr-lightbox');
  const open = !!box && !box.hidden && box.querySelector('img').getAttribute('src') !== null;
  if (box) box.click();
  return {open: open, closed: !!box && box.hidden, url: location.href};
})()"""


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class DevTools:
    """A minimal Chrome DevTools Protocol client over tornado's websocket (no extra package)."""

    def __init__(self, ws) -> None:
        self.ws, self.last_id, self.events = ws, 0, []

    async def call(self, method: str, session: str | None = None, **params):
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.write_message(json.dumps(message))
        while True:
            data = json.loads(await asyncio.wait_for(self.ws.read_message(), 120))
            if data.get("id") == self.last_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data["result"]
            self.events.append(data)


async def visit_pages(port_file: Path, urls: dict[str, str]) -> tuple[dict, list[str]]:
    """Open each page in one tab; returns ``({entry: report}, [every URL the pages requested])``."""
    from tornado.websocket import websocket_connect

    port, path = port_file.read_text().split()
    ws = await websocket_connect(f"ws://127.0.0.1:{port}{path}", max_message_size=1 << 28)
    cdp = DevTools(ws)
    target = (await cdp.call("Target.createTarget", url="about:blank"))["targetId"]
    session = (await cdp.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
    await cdp.call("Network.enable", session)
    await cdp.call("Page.enable", session)
    reports = {}
    for width in WIDTHS:
        await cdp.call("Emulation.setDeviceMetricsOverride", session, width=width, height=900,
                       deviceScaleFactor=1, mobile=width < 600)
        for entry, url in urls.items():
            await cdp.call("Page.navigate", session, url=url)
            for _ in range(600):
                state = await cdp.call("Runtime.evaluate", session,
                                       expression="document.readyState", returnByValue=True)
                if state["result"]["value"] == "complete":
                    break
                await asyncio.sleep(0.1)
            result = await cdp.call("Runtime.evaluate", session, expression=PAGE_REPORT_JS,
                                    awaitPromise=True, returnByValue=True)
            report = result["result"]["value"]
            if width == WIDTHS[0]:
                box = await cdp.call("Runtime.evaluate", session, expression=LIGHTBOX_JS,
                                     returnByValue=True)
                report["lightbox"] = box["result"].get("value")
                if entry == "book/intro":
                    shot = await cdp.call("Page.captureScreenshot", session, format="png")
                    SCREENSHOT.parent.mkdir(exist_ok=True)
                    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
            reports[entry if width == WIDTHS[0] else f"{entry}@{width}"] = report
            size = (await cdp.call("Page.getLayoutMetrics", session))["cssContentSize"]
            shot = await cdp.call("Page.captureScreenshot", session, format="png",
                                  captureBeyondViewport=True, clip={
                                      "x": 0, "y": 0, "width": width, "scale": 1,
                                      "height": min(size["height"], MAX_SHOT_HEIGHT)})
            target = SCREENSHOTS / str(width) / f"{entry.replace('/', '-')}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(shot["data"]))
    requested = [e["params"]["request"]["url"] for e in cdp.events
                 if e.get("method") == "Network.requestWillBeSent"]
    await cdp.call("Browser.close")
    return reports, requested


def read_net_log(path: Path) -> list[dict]:
    """Chrome's net log events (the file lacks its closing brackets if Chrome was killed)."""
    text = path.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    return [{**e, "type": names.get(e["type"], str(e["type"]))} for e in log["events"]]


@pytest.fixture(scope="module")
def browser_visit(smoke_book: Path, tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    tmp = tmp_path_factory.mktemp("chromium")
    net_log = tmp / "netlog.json"
    entries = toc_files(TOC)
    with serve(smoke_book) as base:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}",
             f"--log-net-log={net_log}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            port_file = tmp / "profile" / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not port_file.exists() or len(port_file.read_text().split()) < 2:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chromium did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
            urls = {e: urljoin(base, f"{e.removesuffix('.md')}.html") for e in entries}
            reports, requested = asyncio.run(visit_pages(port_file, urls))
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"base": base, "reports": reports, "requested": requested,
            "net_log": read_net_log(net_log)}


def test_pages_fit_a_laptop_and_a_phone(browser_visit) -> None:
    """Wide tables, equations and figures scroll in their own box: the page never scrolls sideways."""
    for entry, report in browser_visit["reports"].items():
        assert report["overflow"] <= 1, \
            f"{entry}: the page scrolls sideways by {report['overflow']} px"


def test_every_figure_opens_full_size_in_the_page(browser_visit) -> None:
    reports = browser_visit["reports"]
    for name in chapters(TOC):
        box = reports[f"book/{name}"]["lightbox"]
        if reports[f"book/{name}"]["outputImages"]:
            assert box and box["open"] and box["closed"], f"{name}: no full-size view: {box}"
            assert box["url"].endswith(f"{name}.html"), "the click left the page"


def test_browser_renders_figures_and_math(browser_visit) -> None:
    reports = {e: r for e, r in browser_visit["reports"].items() if "@" not in e}
    for entry, report in reports.items():
        broken = [i["src"] for i in report["images"] if not (i["w"] > 0 and i["h"] > 0)]
        assert not broken, f"{entry}: images that did not load: {broken}"
        assert not report["figureAsText"], f"{entry}: figures rendered as text {report['figureAsText']}"
        assert not report["untypeset"], f"{entry}: math left untypeset: {report['untypeset']}"
        assert report["rawTex"] == 0, f"{entry}: raw TeX delimiters left in the page"
    for name in chapters(TOC):  # every executed page shows what it computed: math, a figure or a table
        shown = reports[f"book/{name}"]
        assert shown["math"] + shown["outputImages"] + shown["outputTables"] > 0, name
    if "book/tour" in reports:
        assert reports["book/tour"]["outputImages"] >= 1, "the tour's figure is not an image"
    assert reports["book/intro"]["math"] > 0
    assert SCREENSHOT.stat().st_size > 10_000


def test_no_request_leaves_the_machine(browser_visit) -> None:
    origin = browser_visit["base"].rstrip("/")
    requested = browser_visit["requested"]
    assert any(u.startswith(origin) for u in requested), "the pages made no request at all?"
    remote = sorted({u for u in requested if urlparse(u).scheme in {"http", "https", "ws", "wss"}
                     and urlparse(u).hostname not in LOOPBACK})
    assert not remote, f"the pages requested: {remote}"
    # The net log sees every request of the browser, not just the pages' own.
    events = browser_visit["net_log"]
    jobs = [e.get("params", {}) for e in events if e["type"] == "URL_REQUEST_START_JOB"]
    page_jobs = [j["url"] for j in jobs if j.get("initiator", "").startswith(origin)]
    assert page_jobs and all(urlparse(u).hostname in LOOPBACK for u in page_jobs), page_jobs
    connects = {e["params"]["remote_address"].rsplit(":", 1)[0] for e in events
                if e["type"] == "TCP_CONNECT" and "remote_address" in e.get("params", {})}
    assert connects <= {"127.0.0.1", "[::1]"}, f"TCP connections to {connects}"
    assert not [e for e in events if e["type"] == "DNS_TRANSACTION"], "a DNS query left the browser"
