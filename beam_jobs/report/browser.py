"""Opens an HTML page in headless Chromium and reports what a person would see go wrong.

    python -m beam_jobs.report.browser out/eda/report.html

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
NUL-terminated JSON on file descriptors 3 and 4), so nothing beyond the Python
standard library is needed and no port is opened. The page is loaded from its
file, and once its load event has fired this asks the browser, from outside the
page, for every <img> (its `complete` flag and `naturalWidth`) and collects the
console errors, uncaught exceptions and error log entries (e.g. a resource that
failed to load) it reported along the way. Exit status 1 when an image did not
load or anything was logged as an error.

Debian: `apt-get install chromium`. `find_chromium()` returns None without it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import tempfile
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# How the images are read, from outside the page, once it has loaded.
IMAGES_EXPRESSION = (
    "Array.from(document.images, i => ({src: (i.getAttribute('src') || '').slice(0, 60),"
    " complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))"
)
# Runs in a child Python between fork and exec: moves the two pipe ends to fds 3 and 4, where
# Chromium expects them (no preexec_fn: it is unsafe in a threaded parent).
_TRAMPOLINE = (
    "import os, sys\n"
    "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer in time."""


@dataclasses.dataclass
class PageCheck:
    """What the browser saw: the page's title, its images, and every error it reported."""

    url: str
    title: str
    images: list[dict]
    errors: list[str]

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] <= 0]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.broken_images


def find_chromium() -> str | None:
    """The path of a Chromium or Chrome executable on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high_fd(fd: int) -> int:
    """A close-on-exec copy of FD numbered 10 or more, so moving it to 3 or 4 cannot overwrite the other end."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class _DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, chromium: str, profile_dir: str):
        # Chromium's own log goes to a file: a pipe nobody reads could fill up and stall the browser.
        self.log = open(os.path.join(profile_dir, "chromium.log"), "w+b")  # noqa: SIM115 (closed in close())
        to_browser_r, to_browser_w = (_high_fd(fd) for fd in os.pipe())
        from_browser_r, from_browser_w = (_high_fd(fd) for fd in os.pipe())
        args = [
            chromium,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile_dir}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w), *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.out, self.inp = to_browser_w, from_browser_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """Sends one command and waits for its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self.next_id, timeout, method)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        return self._wait(lambda m: m.get("method") == method, timeout, method)

    def _wait(self, match, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)  # every event stays visible to the error collection
                if match(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {what} within {timeout} s")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 16)
                if not chunk:
                    raise BrowserError(
                        f"Chromium closed the debugging pipe while waiting for {what}: {self.log_tail()}"
                    )
                self.buffer += chunk

    def close(self) -> None:
        try:
            os.write(self.out, json.dumps({"id": self.next_id + 1, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass  # already gone
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.out, self.inp):
            os.close(fd)
        self.log.close()

    def log_tail(self, size: int = 2000) -> str:
        self.log.flush()
        self.log.seek(max(0, os.fstat(self.log.fileno()).st_size - size))
        return self.log.read().decode(errors="replace")


def _errors(events: list[dict]) -> list[str]:
    """The console errors, uncaught exceptions and error log entries among the protocol events."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console."
                + p["type"]
                + ": "
                + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
    return out


def check_page(path: str, chromium: str | None = None, timeout: float = 60) -> PageCheck:
    """Loads PATH (a local HTML file) in headless Chromium and returns what it saw."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise BrowserError(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}); apt-get install chromium")
    url = pathlib.Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="pcam_chromium_") as profile:
        tools = _DevTools(chromium, profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            session = tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log"):
                tools.send(f"{domain}.enable", session=session)
            tools.events.clear()  # only what happens to this page counts
            navigation = tools.send("Page.navigate", {"url": url}, session=session)
            if navigation.get("errorText"):
                raise BrowserError(f"{url}: {navigation['errorText']}")
            tools.wait_event("Page.loadEventFired", timeout)
            images = tools.send(
                "Runtime.evaluate", {"expression": IMAGES_EXPRESSION, "returnByValue": True}, session=session
            )["result"]["value"]
            title = tools.send(
                "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
            )
            # Let late console messages (e.g. image decode errors) arrive before reading the events.
            try:
                tools.send("Runtime.evaluate", {"expression": "1"}, session=session, timeout=5)
            finally:
                events = list(tools.events)
        finally:
            tools.close()
    return PageCheck(url=url, title=title["result"].get("value", ""), images=images, errors=_errors(events))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    result = check_page(argv[0])
    print(f"{result.url}: {result.title!r}, {len(result.images)} images, {len(result.broken_images)} broken")
    for image in result.broken_images:
        print(f"  broken image: {image}")
    for error in result.errors:
        print(f"  error: {error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
