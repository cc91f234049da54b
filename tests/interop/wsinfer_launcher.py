"""Runs the real ``wsinfer`` command line (0.6.1) beside idcscan's own packages.

wsinfer 0.6.1, on import, patches ``zarr.storage.KVStore.__contains__``, a class of zarr 2
(a work-around for a zarr 2 bug that bit tiffslide 2). zarr 3 has no such class, and
idcscan's tiffslide 3 requires zarr >= 3, so ``import wsinfer`` fails with ImportError in
idcscan's environment. This launcher gives zarr 3 an empty ``KVStore`` for wsinfer to patch
and then runs wsinfer's own command line unchanged; nothing else is touched. In an
environment with zarr 2 (``pip install wsinfer==0.6.1 "zarr<3"``) the unmodified command
writes the same numbers.
"""

import sys

import zarr.storage

if not hasattr(zarr.storage, "KVStore"):
    zarr.storage.KVStore = type("KVStore", (), {})

from wsinfer.cli.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
