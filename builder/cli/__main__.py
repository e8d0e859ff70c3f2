"""`python -m builder.cli`: the same entry point as the `fleetpkg` script."""

from . import run

run()
