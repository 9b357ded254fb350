"""`python -m oomol_connect_anyio.emulator`."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
