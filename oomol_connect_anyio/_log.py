"""The package's one logger (never given the API token)."""

from __future__ import annotations

import logging

logger = logging.getLogger("oomol_connect_anyio")
