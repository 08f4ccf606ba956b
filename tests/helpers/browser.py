"""Headless Chromium, driven over the DevTools protocol, to look at report.html as a person would.

Chromium is Debian's `chromium` package: `make test` installs it when it runs as root with apt
(see the Makefile's `browser` target). Where it is missing, the browser tests fail under CI
(CI=true) and are skipped elsewhere, saying how to install it.

The page is loaded from a file; every console message, uncaught exception and browser log entry
at error level is collected, and the rendered DOM is asked (in the page) what it shows.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Flags for a closed network, as root: without the background-networking ones Chromium keeps
# trying to reach Google's services and logs the refusals.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]
START_SECONDS = 60
LOAD_SECONDS = 30

# Runs in the page: what each chart figure shows, as rendered (layout and computed style).
CHARTS_JS = """
[...document.querySelectorAll('figure.chart')].map(figure => {
  const svg = figure.querySelector('svg');
  const box = svg.getBoundingClientRect();
  const bars = [...svg.querySelectorAll('rect.bar')];
  return {
    name: figure.dataset.chart,
    width: box.width,
    height: box.height,
    bar_widths: bars.map(bar => bar.getBBox().width),
    bar_fills: bars.map(bar => getComputedStyle(bar).fill),
    texts: [...svg.querySelectorAll('text.value')].map(t => t.textContent),
  };
})
"""


def chromium_or_skip() -> str:
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found:
        return found
    how = "run `make test` as root (it installs Debian's chromium) or `apt-get install chromium`"
    if os.environ.get("CI"):
        pytest.fail(f"chromium is not installed, and CI must test report.html in it: {how}")
    pytest.skip(f"chromium is not installed: {how}")


@dataclass
class Page:
    charts: list[dict]  # CHARTS_JS's answer
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error logs
    screenshot: bytes = b""


class Chromium:
    """One headless browser for a test session; `load` opens a page in a fresh tab."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="compress-chromium-")
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.port = self._wait_for_port()
        self._next_id = 0

    def _wait_for_port(self) -> int:
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.process.returncode}")
            if active.is_file() and active.read_text().strip():
                return int(active.read_text().splitlines()[0])
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open its DevTools port in {START_SECONDS} s")

    def load(self, path: Path) -> Page:
        import websocket  # websocket-client

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        socket = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=LOAD_SECONDS, suppress_origin=True
        )
        try:
            return self._inspect(socket, path)
        finally:
            socket.close()
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}")

    def _inspect(self, socket, path: Path) -> Page:
        errors: list[str] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self._call(socket, method, {}, errors)
        self._call(socket, "Page.navigate", {"url": path.resolve().as_uri()}, errors)
        self._wait_for(socket, "Page.loadEventFired", errors)
        answer = self._call(
            socket, "Runtime.evaluate", {"expression": CHARTS_JS, "returnByValue": True}, errors
        )
        shot = self._call(
            socket,
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            errors,
        )
        return Page(answer["result"]["value"], errors, base64.b64decode(shot["data"]))

    def _call(self, socket, method: str, params: dict, errors: list[str]) -> dict:
        self._next_id += 1
        socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            _collect_error(message, errors)

    def _wait_for(self, socket, event: str, errors: list[str]) -> None:
        while True:
            message = json.loads(socket.recv())
            if message.get("method") == event:
                return
            _collect_error(message, errors)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def _collect_error(message: dict, errors: list[str]) -> None:
    """Console errors, uncaught exceptions and error-level browser logs (a blocked or failed
    load, a Content-Security-Policy violation) found in a DevTools event."""
    method, params = message.get("method"), message.get("params", {})
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        errors.append("console: " + " ".join(str(a.get("value", a)) for a in params["args"]))
    elif method == "Runtime.exceptionThrown":
        errors.append("exception: " + params["exceptionDetails"].get("text", ""))
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        errors.append("log: " + params["entry"]["text"])
