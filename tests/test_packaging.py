"""The wheel carries templates/ and payloads/: an installed (non-editable) fleetpkg must work."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_carries_templates_and_payloads(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("fleetpkg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "templates").iterdir():
        assert f"builder/templates/{template.name}" in names, template.name
    for payload in (REPO / "payloads").iterdir():
        assert f"builder/payloads/{payload.name}" in names, payload.name
    assert "builder/cli/__init__.py" in names and "builder/cli/__main__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fleetpkg = builder.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()
