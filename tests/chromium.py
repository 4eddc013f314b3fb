"""Headless Chromium for tests: load a page, collect what its console reported, take a screenshot.

Debian's `chromium` (hack/chromium/install.sh; CHROMIUM names another binary) runs with a
profile directory of its own and `--remote-debugging-port=0`; the port it picked is read from
the DevToolsActivePort file it writes, and the page is driven over the Chrome DevTools Protocol
(a WebSocket, here aiohttp's client): Runtime and Log events are collected from before the
navigation until the load event, then Page.captureScreenshot returns the PNG.

A console error is any `console.error`/`console.assert` call, any uncaught exception, and any
error the browser itself logs for the page (a resource that failed to load, a blocked script).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT = 60.0
LOAD_TIMEOUT = 30.0


def binary() -> str | None:
    name = os.environ.get("CHROMIUM", "chromium")
    return shutil.which(name) or (name if Path(name).is_file() else None)


@dataclasses.dataclass
class PageResult:
    screenshot: bytes
    console_errors: list[str]
    title: str

    def distinct_colours(self) -> int:
        """How many colours the screenshot has: 1 for a blank page."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.screenshot)).convert("RGB")
        return len(image.getcolors(maxcolors=1 << 24) or [])


class ChromiumError(RuntimeError):
    pass


def render(url: str, profile: Path, width: int = 1280, height: int = 2000) -> PageResult:
    """Load `url` in a fresh headless Chromium and return its screenshot and console errors."""
    chromium = binary()
    if chromium is None:
        raise ChromiumError("chromium is not installed: run hack/chromium/install.sh (make test does)")
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile / "chromium.log").open("wb")
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        port = _devtools_port(profile, process)
        return asyncio.run(_drive(port, url, width, height))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _devtools_port(profile: Path, process: subprocess.Popen) -> int:
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = (profile / "chromium.log").read_text(errors="replace")[-2000:]
            raise ChromiumError(f"chromium exited with {process.returncode} before it listened:\n{text}")
        if active.is_file():
            first = active.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        time.sleep(0.1)
    raise ChromiumError(f"chromium wrote no {active} within {START_TIMEOUT:g}s")


async def _drive(port: int, url: str, width: int, height: int) -> PageResult:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            client = _Client(ws)
            for domain in ("Runtime", "Log", "Page"):
                await client.call(f"{domain}.enable")
            await client.call("Emulation.setDeviceMetricsOverride",
                              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            await client.call("Page.navigate", {"url": url})
            await client.wait_event("Page.loadEventFired", LOAD_TIMEOUT)
            title = (await client.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True}))
            shot = await client.call("Page.captureScreenshot", {"format": "png"})
            return PageResult(base64.b64decode(shot["data"]), client.errors, title["result"].get("value", ""))


class _Client:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        self.seen: set[str] = set()

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        if method:
            self.seen.add(method)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params.get("args") or []]
            self.errors.append("console." + params["type"] + ": " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            description = (details.get("exception") or {}).get("description") or details.get("text", "")
            self.errors.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source', 'browser')}: {entry.get('text', '')} {entry.get('url', '')}".strip())

    async def _receive(self, timeout: float) -> dict[str, Any]:
        message = await self.ws.receive_json(timeout=timeout)
        self._note(message)
        return message

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        await self.ws.send_json({"id": ident, "method": method, "params": params or {}})
        while True:
            message = await self._receive(LOAD_TIMEOUT)
            if message.get("id") == ident:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error']}")
                return message.get("result") or {}

    async def wait_event(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while method not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError(f"no {method} within {timeout:g}s")
            await self._receive(left)
        # Errors logged while the page settles (a failed image decodes after load) still count.
        try:
            while True:
                await self._receive(0.3)
        except asyncio.TimeoutError:
            pass
