"""Render pages in Debian's real headless Chromium and read the result back.

`dump_dom(url)` returns the DOM after the page's scripts ran; `screenshot(url, png)` writes a
PNG. `parse_status_page(dom)` extracts what the status page shows: rows (device, state, site,
hidden) and the counters.
"""
import html.parser
import os
import shutil
import subprocess
import tempfile

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium_binary():
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args, timeout=90):
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium not found: apt-get install chromium")
    profile = tempfile.mkdtemp(prefix="edgefleet-chromium-")
    try:
        result = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def dump_dom(url):
    return _run(["--dump-dom", url])


def screenshot(url, png_path, width=1400, height=700):
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    _run([f"--screenshot={os.path.abspath(png_path)}", f"--window-size={width},{height}",
          "--hide-scrollbars", url])
    return png_path


class _StatusPageParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows = []
        self.counters = {}
        self.texts = {}
        self._capture = None
        self.body = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "tr" and "data-device" in attrs:
            self.rows.append({"device": attrs["data-device"], "state": attrs.get("data-state"),
                              "site": attrs.get("data-site"), "hidden": "hidden" in attrs})
        element_id = attrs.get("id")
        if element_id and (element_id.startswith("count-") or element_id in (
                "shown-count", "total-count", "summary-line")):
            self._capture = element_id
            self.texts[element_id] = ""

    def handle_data(self, data):
        if self._capture:
            self.texts[self._capture] += data

    def handle_endtag(self, tag):
        self._capture = None


def parse_status_page(dom):
    parser = _StatusPageParser()
    parser.feed(dom)
    counters = {key[len("count-"):]: int(value) for key, value in parser.texts.items()
                if key.startswith("count-")}
    return {
        "rows": parser.rows,
        "counters": counters,
        "shown": int(parser.texts.get("shown-count", "-1")),
        "total": int(parser.texts.get("total-count", "-1")),
        "summary_line": parser.texts.get("summary-line", "").strip(),
        "ready": parser.body.get("data-ready") == "true",
    }
