from oomol_connect_anyio._version import __version__ as __version__
