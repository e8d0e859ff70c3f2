"""fleetpkg: build 1E Client deployment artifacts for macOS fleets without Apple tools."""

__version__ = "0.1.0"
