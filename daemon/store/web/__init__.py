"""The store manager's web page: static files the aggregator's HTTP app serves as they are.

No build step: ``static/index.html`` loads ``app.js`` (one plain ES module) and ``style.css``,
all local (the registers' network has no internet). The page reads the JSON API under
``/api/v1`` and shows money from integer minor units with each currency's own decimals.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
