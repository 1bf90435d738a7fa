"""Fixtures the dashboard's tests share: dashboards on real servers, and chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln.ui import UISettings, create_app
from kiln.ui.server import running

CHROMIUM = os.environ.get("KILN_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def serve() -> Iterator[Callable[..., httpx.Client]]:
    """Start dashboards with given settings; each a client with its own cookies."""
    with contextlib.ExitStack() as stack:

        def start(**settings: Any) -> httpx.Client:
            url = stack.enter_context(running(create_app(UISettings(**settings))))
            return stack.enter_context(httpx.Client(base_url=url))

        yield start


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (nothing is downloaded)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium is needed for the browser tests ({CHROMIUM}): apt-get install chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
