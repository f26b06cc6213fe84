"""`python -m tests.screenshots OUTDIR`: the dashboard's views at tablet size (1024x768), one PNG each, as the docs
show them (docs/screenshots/). The daemon runs on the demo venue at 10x (as the tests start it) for ten minutes of show
time first, then each view is opened as admin in headless Chromium (peers.chromium), with something in it: an
effect fired and previewed on the show view, a plot of the floor's sound level."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import PeerMissing
from peers.chromium import chromium
from tests.conftest import ADMIN, Daemon, demo_config, free_port
from tests.test_dashboard import by_testid, go, ids_of, login, wait_for

WIDTH, HEIGHT = 1024, 768
SPEED = 10.0
WARM_S = 60.0  # real seconds (10 minutes of show) before the first view: the models score, the plots have a history


def prepare(driver: Any, daemon: Daemon, view: str) -> None:
    """What a view shows once someone has used it a little."""
    if view == "dmx":  # a console's scene on the first universe: a wash on 1-48, a few moving heads' dimmers
        levels = {str(c): 255 - 5 * c for c in range(1, 49)} | {str(c): 200 for c in range(100, 160, 6)}
        status, _, body = daemon.request("PATCH", "/api/v1/twin/assets/universe:1/desired", ADMIN, {"levels": levels})
        assert status == 200, body
    elif view == "show":
        by_testid(driver, "preset-chorus").click()
        wait_for(lambda: set(ids_of(driver, "recent-")) - {"recent-effects"}, "the chorus among the recent effects")
        by_testid(driver, "preview-chorus").click()
        wait_for(lambda: by_testid(driver, "preview-canvas"), "the preview")
    elif view == "plots":
        driver.execute_script("""
            const select = arguments[0];
            select.value = 'spl:floor';
            select.dispatchEvent(new Event('change', {bubbles: true}));""", by_testid(driver, "plots-asset"))
        by_testid(driver, "plots-add").click()
        wait_for(lambda: by_testid(driver, "plots-plot"), "the plot")
    time.sleep(1.0)  # the view's first answers and a few live changes


def shoot(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="vg-screenshots-") as tmp, chromium(WIDTH, HEIGHT) as driver:
        port = free_port()
        daemon = Daemon(demo_config(Path(tmp), port, speed=SPEED, sensing=True), port).start()
        try:
            time.sleep(WARM_S)
            login(driver, daemon, ADMIN, "admin")
            for view in [t.removeprefix("nav-") for t in ids_of(driver, "nav-")]:
                go(driver, view)
                prepare(driver, daemon, view)
                driver.execute_script("window.scrollTo(0, 0)")
                path = out / f"{view}.png"
                path.write_bytes(driver.get_screenshot_as_png())
                written.append(path)
                print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
        finally:
            daemon.cleanup()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.screenshots", description=__doc__)
    parser.add_argument("outdir", type=Path, help="where the PNGs go (docs/screenshots)")
    args = parser.parse_args()
    try:
        shoot(args.outdir)
    except PeerMissing as exc:
        print(f"screenshots not taken: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
