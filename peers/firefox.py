"""Debian's Firefox ESR, driven over WebDriver BiDi, the remote protocol built into Firefox itself: Debian packages
no geckodriver, and Selenium would download one. Headless, with a fresh profile of its own; the page's console
entries are kept for the tests to read. Only what the dashboard's test needs: open a page, evaluate a script in
it, read the console."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from typing import Any

import aiohttp

from peers import PeerMissing
from peers.ports import free_port

BROWSERS = ("firefox-esr", "firefox")
START_TIMEOUT_S = 30.0


class Firefox:
    """`async with Firefox() as ff`: a headless Firefox with a browsing context ready, its console in `ff.console`."""

    def __init__(self) -> None:
        program = next((p for p in map(shutil.which, BROWSERS) if p is not None), None)
        if program is None:
            raise PeerMissing("Firefox (Debian package firefox-esr)")
        self._program = program
        self._profile = tempfile.TemporaryDirectory(prefix="vg-firefox-")
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0
        self._context = ""
        self.console: list[dict[str, Any]] = []  # log.entryAdded: level, text, source, ...

    async def __aenter__(self) -> Firefox:
        port = free_port()
        self._process = await asyncio.create_subprocess_exec(
            self._program, "--headless", "--no-remote", "--profile", self._profile.name,
            f"--remote-debugging-port={port}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._http = aiohttp.ClientSession()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while self._ws is None:
            try:
                self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}/session")
            except aiohttp.ClientError:
                if loop.time() > deadline or self._process.returncode is not None:
                    await self.__aexit__()
                    raise RuntimeError(f"Firefox did not open WebDriver BiDi on port {port}") from None
                await asyncio.sleep(0.2)
        await self.command("session.new", {"capabilities": {}})
        await self.command("session.subscribe", {"events": ["log.entryAdded"]})
        tree = await self.command("browsingContext.getTree", {})
        self._context = tree["contexts"][0]["context"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self.command("session.end", {})
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._profile.cleanup()

    async def command(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept (the console's)."""
        assert self._ws is not None
        self._next_id += 1
        sent = self._next_id
        await self._ws.send_json({"id": sent, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == sent:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('error')}: {message.get('message')}")
                result: dict[str, Any] = message["result"]
                return result
            if message.get("method") == "log.entryAdded":
                self.console.append(message["params"])

    async def open(self, url: str) -> None:
        await self.command("browsingContext.navigate", {"context": self._context, "url": url, "wait": "complete"})

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page (awaited if it is a promise), as BiDi serialises it."""
        answer = await self.command("script.evaluate", {"expression": expression, "awaitPromise": True,
                                                        "target": {"context": self._context}})
        if answer.get("type") == "exception":
            raise RuntimeError(f"{expression}: {answer.get('exceptionDetails', {}).get('text')}")
        return answer.get("result", {}).get("value")

    async def until(self, expression: str, within_s: float = 10.0) -> Any:
        """Evaluate `expression` until it is truthy; its value, or TimeoutError."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not (value := await self.evaluate(expression)):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"not true within {within_s:g} s: {expression}")
            await asyncio.sleep(0.1)
        return value
