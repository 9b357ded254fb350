"""``python -m oomol_connect_anyio.cli``."""

from . import main

raise SystemExit(main())
