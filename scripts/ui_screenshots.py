"""Screenshots of the dashboard on the demo's data for the README: runs `kiln demo` in a
throw-away home, serves `kiln ui`'s app and saves the pages with Debian's chromium.

    python scripts/ui_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

import kiln
from kiln.cli._demo import run_demo
from kiln.ui import UISettings, create_app
from kiln.ui.server import running

PAGES = {
    "ui-runs.png": "/experiments/fraud-demo",
    "ui-deployment.png": "/deployments/fraud-api?window=15m",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home:
        kiln.configure(home=home)
        run_demo(Console(file=io.StringIO()), n_transactions=5_000, seed=3)
        with running(create_app(UISettings())) as url, sync_playwright() as p:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            for name, path in PAGES.items():
                response = page.goto(url + path)
                if response is None or response.status != 200:
                    print(f"skipped {path}: {response.status if response else 'no answer'}")
                    continue
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(out / name))
                print(f"wrote {out / name}")
            browser.close()


if __name__ == "__main__":
    main()
