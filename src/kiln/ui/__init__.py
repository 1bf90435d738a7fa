"""Layer 6: the dashboard (``kiln ui``), server-rendered pages over the public SDK.

Starlette and Jinja2 render each page on the server from ``kiln.runs``, ``kiln.models``,
``kiln.deployments``...; a little JavaScript draws charts with uPlot, which ships inside
the package with its license (nothing loads from a CDN). Read-only unless started with
``allow_writes``; a token is required beyond this machine.
"""

from kiln.ui.app import UISettings, create_app
from kiln.ui.server import TOKEN_ENV, serve_ui

__all__ = ["TOKEN_ENV", "UISettings", "create_app", "serve_ui"]
