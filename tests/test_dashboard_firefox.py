"""The dashboard in Firefox too: Debian's Firefox ESR over WebDriver BiDi (peers.firefox), against the real daemon on
the demo venue. An admin logs in, sees the overview go live, and opens every view; Firefox's console holds no error
and no warning. (The behaviour itself is tested in Chromium: tests/test_dashboard.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from peers.firefox import Firefox
from tests.conftest import ADMIN, Daemon, demo_config, free_port

VIEWS = ("overview", "map", "equipment", "plots", "show", "dmx", "compliance", "replay", "admin")


async def test_an_admin_sees_every_view_live_in_firefox_without_a_console_error(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(demo_config(tmp_path, port, speed=10, sensing=False), port).start()
    try:
        async with Firefox() as firefox:
            await firefox.open(f"http://127.0.0.1:{port}/ui/")
            await firefox.until("document.querySelector('[data-testid=login-token]')")
            # typed as a person would: the field's input event, then (a moment later) the button
            await firefox.evaluate(f"""(() => {{
                const field = document.querySelector('[data-testid=login-token]');
                const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
                setter.call(field, {json.dumps(ADMIN)});
                field.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()""")
            await firefox.until("document.querySelector('[data-testid=login-token]').value.length > 0")
            await firefox.evaluate("document.querySelector('[data-testid=login-submit]').click(); true")
            live = await firefox.until("document.querySelector('[data-testid=box-live]')?.textContent")
            assert "live" in live
            for view in VIEWS:
                await firefox.evaluate(f"location.hash = '#/{view}'; true")
                await firefox.until(f"document.querySelector('[data-testid=view-{view}]')")
                assert not await firefox.evaluate("!!document.querySelector('[data-testid=view-error]')"), view
            await firefox.evaluate("new Promise((done) => setTimeout(() => done(true), 1000))")  # late errors too
            bad = [(entry.get("level"), entry.get("text")) for entry in firefox.console
                   if entry.get("level") in ("error", "warn")]
            assert not bad, bad
    finally:
        daemon.cleanup()
