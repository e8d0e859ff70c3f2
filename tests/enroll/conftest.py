"""A real SCEP server for the enroll tests: Debian's `scepserver` (micromdm/scep) with its own CA
(`scepserver ca -init`) in a depot under tmp_path, on 127.0.0.1 at a free port, started and
stopped by a fixture with bounded waits. Its depot (index.txt, issued certificates) and its
debug log are what the tests read to prove what reached it."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import require_tool

CHALLENGE = "Sc3p-distinctive-Challenge-7731"
READY_TIMEOUT = 15.0  # seconds for the server to accept connections
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ScepServer:
    depot: Path
    challenge: str | None = CHALLENGE
    allow_renew_days: int = 0  # 0: reissue for a name at any time (as NDES does)
    valid_days: int = 365
    port: int = 0
    log: Path = field(init=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.log = self.depot.parent / f"{self.depot.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scep"

    @property
    def ca_pem(self) -> Path:
        return self.depot / "ca.pem"

    @property
    def ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem.read_bytes())

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.ca.public_bytes(serialization.Encoding.DER)).hexdigest()

    def init_ca(self) -> None:
        tool = require_tool("scepserver")
        subprocess.run([tool, "ca", "-init", "-depot", str(self.depot), "-keySize", "2048",
                        "-organization", "fleetpkg test CA"], check=True, capture_output=True,
                       timeout=60)

    def start(self) -> "ScepServer":
        tool = require_tool("scepserver")
        if not self.ca_pem.exists():
            self.init_ca()
        self.port = self.port or free_port()
        args = [tool, "-depot", str(self.depot), "-port", str(self.port), "-debug",
                "-allowrenew", str(self.allow_renew_days), "-crtvalid", str(self.valid_days)]
        if self.challenge is not None:
            args += ["-challenge", self.challenge]
        log = self.log.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"scepserver exited with {self.proc.returncode}: {self.log.read_text()}")
            try:  # a bare TCP connect: no HTTP request, so the log holds only the tests' own
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"scepserver did not answer within {READY_TIMEOUT} s: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    # -- what reached the server ------------------------------------------------------
    def issued(self) -> list[str]:
        """The subjects of the certificates the CA issued (index.txt rows)."""
        index = self.depot / "index.txt"
        if not index.exists():
            return []
        return [line.split("\t")[-1] for line in index.read_text().splitlines() if line.strip()]

    def pki_requests(self) -> list[str]:
        """The SCEP message types the server parsed (its -debug log names each one)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split("scep_message_type=")[1].split('"')[1]
                for line in text.splitlines() if "scep_message_type=" in line]

    def operations(self) -> list[str]:
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split(" op=")[1].split()[0] for line in text.splitlines()
                if " op=" in line and "caller=endpoint.go" in line]


@pytest.fixture
def scep_server(tmp_path):
    """A running scepserver with its own CA, the CHALLENGE, renewal allowed any time."""
    server = ScepServer(tmp_path / "depot").start()
    yield server
    server.stop()


@pytest.fixture
def scep_factory(tmp_path):
    """Build servers with other options (start() them); all are stopped at the end."""
    made: list[ScepServer] = []

    def make(name: str = "depot", **options) -> ScepServer:
        server = ScepServer(tmp_path / name, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
