"""Check a built HTML book the way readers see it: every page loaded in headless Chromium.

    python tools/pages.py _build/html [--screenshots DIR] [--chapter chapters/foundations/01_exact]

The site is served by a throw-away HTTP server on 127.0.0.1 and every page is loaded in headless
Chromium (Debian's ``chromium``), with every other host unreachable, as on a machine without
network. From the rendered DOM of each page the checker reports:

* **math**: an equation MathJax did not typeset (MathJax missing, a TeX error, an undefined
  macro) or TeX left as raw text in the page;
* **images and resources**: an image that did not load, any other resource of the page that
  failed (404, unreachable host), and any request to another host than the site's own;
* **links and references**: an internal link to a missing file or to a missing ``#anchor``, a
  cross-reference Sphinx could not resolve, a JavaScript error;
* **chapter pages** (``--chapter``): the launch buttons (Binder; Colab opening the chapter's
  ``.ipynb`` that the site publishes next to the page) and the download button (an ``.ipynb`` that
  is a real notebook).

It writes a screenshot of every page (PNG, the full page up to ``MAX_SHOT_HEIGHT`` pixels).
Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``): no
driver, no port, no dependency beyond the standard library. Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import functools
import http.server
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

# The flags the book's tests run Chromium with (a fresh --user-data-dir is added per run).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    # offline: every host but the local server is unreachable
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
WINDOW = (1280, 900)
MAX_SHOT_HEIGHT = 30000
CHROMIUM_CANDIDATES = ["/usr/lib/chromium/chromium", "chromium", "chromium-browser",
                       "google-chrome", "google-chrome-stable"]


def find_chromium() -> str | None:
    """The Chromium binary: $OTBOOK_CHROMIUM, else Debian's (skipping its wrapper), else PATH."""
    for name in [os.environ.get("OTBOOK_CHROMIUM", ""), *CHROMIUM_CANDIDATES]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the child)."""

    def __init__(self, binary: str | None = None, *, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium found: install Debian's `chromium` (make browser)")
        self.timeout = timeout
        self._tmp = tempfile.mkdtemp(prefix="otbook-chromium-")
        self._log_path = os.path.join(self._tmp, "chromium.log")
        cmd_read, self._cmd_write = os.pipe()
        self._res_read, res_write = os.pipe()
        args = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._tmp}/profile",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--remote-debugging-pipe", "about:blank"]
        with open(self._log_path, "wb") as log:
            # the shell moves our two pipes to the fds Chromium expects: 3 (commands), 4 (replies)
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null 1>&2', "sh", *args],
                stdin=cmd_read, stdout=res_write, stderr=log, start_new_session=True,
            )
        os.close(cmd_read)
        os.close(res_write)
        self._buffer = bytearray()
        self._next_id = 0
        self.events: collections.deque = collections.deque()
        self.session = None
        try:
            self.call("Browser.getVersion")
        except Exception:
            self.close()
            raise

    # -- protocol -------------------------------------------------------------------------
    def _log_tail(self) -> str:
        try:
            return Path(self._log_path).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _read_message(self, deadline: float) -> dict:
        """The next message from Chromium (messages end with a NUL byte)."""
        scanned = 0
        while (end := self._buffer.find(b"\0", scanned)) < 0:
            scanned = len(self._buffer)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._res_read], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._res_read, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self.proc.poll()}):\n{self._log_tail()}")
            self._buffer += chunk
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_write, data):]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, *, session: str | None = None, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == event and ev.get("sessionId") == session:
                    del self.events[i]
                    return ev
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("Browser.close", timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # Chromium's helpers (renderer, zygote) are in the process group it was started in
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for fd in (self._cmd_write, self._res_read):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- pages ------------------------------------------------------------------------------
    def open_tab(self) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=self.session)
        return self.session

    def load(self, url: str, *, timeout: float | None = None) -> list[dict]:
        """Navigate the tab to ``url``, wait for its load event; the events seen meanwhile."""
        s = self.session or self.open_tab()
        self.events.clear()
        nav = self.call("Page.navigate", {"url": url}, session=s)
        if nav.get("errorText"):
            raise BrowserError(f"cannot load {url}: {nav['errorText']}")
        self.wait_for("Page.loadEventFired", session=s, timeout=timeout)
        return list(self.events)

    def evaluate(self, expression: str, *, timeout: float | None = None):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session=self.session,
                        timeout=timeout)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description") or details.get("text"))
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (up to MAX_SHOT_HEIGHT): the viewport is made page-tall first."""
        s = self.session
        size = self.call("Page.getLayoutMetrics", session=s)["cssContentSize"]
        height = max(WINDOW[1], min(int(size["height"]), MAX_SHOT_HEIGHT))
        self.call("Emulation.setDeviceMetricsOverride", {"width": WINDOW[0], "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session=s)
        try:
            self.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
            shot = self.call("Page.captureScreenshot", {"format": "png"}, session=s)
        finally:
            self.call("Emulation.clearDeviceMetricsOverride", session=s)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


# -- the local server -----------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- what is checked in the page ------------------------------------------------------------
PAGE_JS = r"""
async (opts) => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + opts.timeoutMs;
  const within = (p) => Promise.race([p, sleep(Math.max(0, deadline - Date.now()))]);
  const clip = (s) => s.replace(/\s+/g, " ").trim().slice(0, 100);
  const problems = [];
  const report = {problems, equations: 0, images: 0, links: [], ids: [], mathjax: null,
                  launch: [], download: [], counts: {}};

  // images: none lazy, all settled
  const imgs = [...document.images];
  imgs.forEach((img) => { if (img.loading === "lazy") img.loading = "eager"; });
  await within(Promise.all(imgs.map((img) => img.complete ? null :
    new Promise((r) => { img.addEventListener("load", r); img.addEventListener("error", r); }))));
  for (const img of imgs) {
    report.images += 1;
    if (!img.complete || img.naturalWidth === 0) problems.push(`image not loaded: ${img.getAttribute("src")}`);
  }

  // math: typeset by MathJax, without errors, none left as TeX
  const mathEls = [...document.querySelectorAll(".math")];
  report.equations = mathEls.length;
  const MJ = window.MathJax;
  if (mathEls.length) {
    if (!MJ || !MJ.startup || !MJ.startup.promise) {
      problems.push(`MathJax did not load: ${mathEls.length} equations shown as raw TeX`);
    } else {
      await within(MJ.startup.promise);
      report.mathjax = MJ.version;
      for (const item of MJ.startup.document.math) {
        const mml = MJ.startup.toMML(item.root);
        const err = mml.match(/<merror[^>]*data-mjx-error="([^"]*)"/);
        if (err || /<merror/.test(mml)) problems.push(`equation not typeset (${err ? err[1] : "TeX error"}): ${clip(item.math)}`);
        else if (/mathcolor="red"/.test(mml)) problems.push(`undefined macro in equation: ${clip(item.math)}`);
      }
      for (const el of mathEls) {
        if (!el.querySelector("mjx-container")) problems.push(`equation not typeset: ${clip(el.textContent)}`);
      }
    }
  }
  const skip = "script, style, noscript, template, pre, code, textarea, kbd, samp, .highlight, .math, mjx-container";
  // TeX delimiters or commands left in the prose (text outside code and typeset math)
  const rawTex = /\\[()[\]]|\$\$|\\[A-Za-z]{2,}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || n.parentElement.closest(skip)) continue;
    const m = n.data.match(rawTex);
    if (m) problems.push(`raw TeX in the text: ${clip(n.data.slice(Math.max(0, m.index - 30), m.index + 60))}`);
  }

  // cross-references Sphinx could not resolve, and docutils' own error markers
  for (const el of document.querySelectorAll(".xref, .problematic, .system-message")) {
    if (el.classList.contains("xref") && el.closest("a")) continue;
    problems.push(`unresolved reference: ${clip(el.textContent)}`);
  }

  // links and anchors, checked against the files and the other pages afterwards
  report.links = [...document.querySelectorAll("a[href]")].map((a) =>
    ({href: a.href, raw: a.getAttribute("href"), text: clip(a.textContent)}));
  report.ids = [...document.querySelectorAll("[id]")].map((e) => e.id)
    .concat([...document.querySelectorAll("a[name]")].map((a) => a.name));
  report.launch = [...document.querySelectorAll(".dropdown-launch-buttons a[href]")].map((a) => a.href);
  report.download = [...document.querySelectorAll(".dropdown-download-buttons a[href]")].map((a) => a.href);
  for (const [name, sel] of Object.entries(opts.count)) report.counts[name] = document.querySelectorAll(sel).length;
  return report;
}
"""

# what the report counts on every page (the tests use these, e.g. no solution in the student edition)
COUNT = {"exercises": ".exercise", "solutions": ".solution", "outputs": ".cell_output",
         "figures": ".cell_output img"}
IGNORED_PATHS = {"/favicon.ico"}


@dataclasses.dataclass
class PageReport:
    page: str                      # path of the page in the site, e.g. "chapters/foundations/01_exact.html"
    problems: list[str] = dataclasses.field(default_factory=list)
    equations: int = 0
    images: int = 0
    mathjax: str | None = None
    counts: dict = dataclasses.field(default_factory=dict)
    screenshot: Path | None = None
    links: list = dataclasses.field(default_factory=list, repr=False)
    ids: set = dataclasses.field(default_factory=set, repr=False)
    launch: list = dataclasses.field(default_factory=list, repr=False)
    download: list = dataclasses.field(default_factory=list, repr=False)


def site_pages(site: Path) -> list[str]:
    """Every HTML page of a built site (not the theme's assets under ``_static`` and the like)."""
    pages = []
    for p in sorted(site.rglob("*.html")):
        rel = p.relative_to(site)
        if not any(part.startswith("_") or part.startswith(".") for part in rel.parts[:-1]):
            pages.append(rel.as_posix())
    return pages


REDIRECT = re.compile(r'<meta http-equiv="refresh" content="\d+;\s*url=([^"]+)"', re.I)


def _ids_in_file(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]+)"', text)) | set(re.findall(r'<a[^>]*\bname="([^"]+)"', text))


def _is_notebook(path: Path) -> bool:
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(nb, dict) and nb.get("nbformat") == 4 and isinstance(nb.get("cells"), list)


def _check_links(reports: dict[str, PageReport], site: Path, base: str) -> None:
    origin = urlsplit(base).netloc
    for rep in reports.values():
        seen = set()
        for link in rep.links:
            url = urlsplit(link["href"])
            if url.scheme not in ("http", "https") or url.netloc != origin or link["href"] in seen:
                continue
            seen.add(link["href"])
            path = unquote(url.path).lstrip("/")
            if path == "" or path.endswith("/"):
                path += "index.html"
            target = site / path
            if not target.is_file():
                rep.problems.append(f"broken link: {link['raw']} ({link['text'] or 'no text'})")
                continue
            frag = unquote(url.fragment)
            if frag and target.suffix == ".html":
                ids = reports[path].ids if path in reports else _ids_in_file(target)
                if frag not in ids:
                    rep.problems.append(f"broken anchor: {link['raw']} ({link['text'] or 'no text'})")


def _check_buttons(rep: PageReport, site: Path, base: str) -> None:
    """A chapter page launches on Binder and Colab and downloads its executed notebook."""
    stem = rep.page[: -len(".html")]
    if not any("binder" in u for u in rep.launch):
        rep.problems.append("no Binder launch button")
    colab = [u for u in rep.launch if "colab" in u]
    if not colab:
        rep.problems.append("no Colab launch button")
    for u in colab:
        if not u.endswith(f"/{stem}.ipynb"):
            rep.problems.append(f"the Colab button does not open the chapter's notebook: {u}")
        elif not _is_notebook(site / f"{stem}.ipynb"):
            rep.problems.append(f"the Colab button opens {stem}.ipynb, which the site does not publish")
    notebooks = [u for u in rep.download if u.startswith(base) and u.endswith(".ipynb")]
    if not notebooks:
        rep.problems.append("no .ipynb download button")
    for u in notebooks:
        if not _is_notebook(site / unquote(urlsplit(u).path).lstrip("/")):
            rep.problems.append(f"the download button offers {u[len(base):]}, which is not a notebook")


def _network_problems(events: list[dict], base: str) -> list[str]:
    problems, urls = [], {}
    for ev in events:
        p = ev.get("params", {})
        if ev["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(base):
                problems.append(f"requests {url[:120]} from the network (the page must work offline)")
        elif ev["method"] == "Network.responseReceived":
            url, status = p["response"]["url"], p["response"]["status"]
            if status >= 400 and urlsplit(url).path not in IGNORED_PATHS:
                problems.append(f"failed to load {url.replace(base, '/')[:120]}: HTTP {status}")
        elif ev["method"] == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p["requestId"], "?")
            if url.startswith(base) and urlsplit(url).path not in IGNORED_PATHS:
                problems.append(f"failed to load {url.replace(base, '/')[:120]}: {p.get('errorText')}")
        elif ev["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            problems.append(f"JavaScript error: {text.splitlines()[0][:160] if text else '?'}")
    return list(dict.fromkeys(problems))


def check_site(site, *, pages: list[str] | None = None, chapters=(), screenshots=None,
               timeout: float = 60.0, browser: str | None = None) -> dict[str, PageReport]:
    """Load every page of the built site ``site`` in headless Chromium and check it.

    ``pages``: the pages to load (default: all of them); links are still checked against every
    file of the site. ``chapters``: pages (``chapters/x/01_y`` or ``.../01_y.html``) that must have
    launch and download buttons. ``screenshots``: a folder for a PNG of each page.
    Returns ``{page: PageReport}``; a page passes when its ``problems`` is empty.
    """
    site = Path(site).resolve()
    pages = site_pages(site) if pages is None else list(pages)
    chapters = {c if c.endswith(".html") else f"{c}.html" for c in chapters}
    reports: dict[str, PageReport] = {}
    with serve(site) as base, Chromium(browser, timeout=timeout) as chrome:
        chrome.open_tab()
        for page in pages:
            rep = reports[page] = PageReport(page)
            redirect = REDIRECT.search((site / page).read_text(errors="replace")[:2000])
            if redirect:  # a redirect stub (index.html): its target is checked as a link
                rep.links = [{"href": urljoin(base + page, redirect.group(1)),
                              "raw": redirect.group(1), "text": "redirect"}]
                continue
            try:
                chrome.load(base + page, timeout=timeout)
                result = chrome.evaluate(f"({PAGE_JS})({json.dumps({'timeoutMs': int(timeout * 1000), 'count': COUNT})})",
                                         timeout=timeout + 5)
            except (BrowserError, TimeoutError) as err:
                rep.problems.append(f"could not check the page: {err}")
                continue
            rep.problems += result["problems"] + _network_problems(list(chrome.events), base)
            rep.equations, rep.images, rep.mathjax = result["equations"], result["images"], result["mathjax"]
            rep.counts, rep.links, rep.ids = result["counts"], result["links"], set(result["ids"])
            rep.launch, rep.download = result["launch"], result["download"]
            if page in chapters:
                _check_buttons(rep, site, base)
            if screenshots is not None:
                rep.screenshot = Path(screenshots) / Path(page).with_suffix(".png")
                chrome.screenshot(rep.screenshot)
        _check_links(reports, site, base)
    missing = chapters - set(reports)
    for page in sorted(missing):
        reports[page] = PageReport(page, problems=["chapter page missing from the site"])
    return reports


def summary(reports: dict[str, PageReport]) -> str:
    lines = []
    for page, rep in reports.items():
        status = "ok" if not rep.problems else f"{len(rep.problems)} problem(s)"
        lines.append(f"{page}: {status} ({rep.equations} equations, {rep.images} images)")
        lines += [f"    {p}" for p in rep.problems]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", help="a built HTML site, e.g. _build/html")
    ap.add_argument("--screenshots", help="folder for a PNG of each page")
    ap.add_argument("--chapter", action="append", default=[], help="a page that needs launch/download buttons")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    reports = check_site(args.site, chapters=args.chapter, screenshots=args.screenshots, timeout=args.timeout)
    print(summary(reports))
    return 1 if any(r.problems for r in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
