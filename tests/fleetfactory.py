"""Builds test fleets on disk: a CA, device certificates and .pfx files made with `cryptography`
(never with fleetpkg's own code), a vendor package stand-in, fleet.toml and devices.csv."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
import atexit
import functools
import plistlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import FIXTURES

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
PASSWORD = "Zq7-distinctive-pfx-Passw0rd!"


@functools.cache
def vendor_standin() -> Path:
    """A 1E Client-shaped component package made with independent tools only: GNU cpio + gzip
    for the payload, plistlib for the LaunchDaemon, bsdtar's xar writer for the container, and
    a real x86_64 Mach-O from the fixtures as the client binary."""
    work = Path(tempfile.mkdtemp(prefix="fleetfactory-vendor-"))
    atexit.register(shutil.rmtree, work, True)
    root = work / "root"
    client = root / "Library/Application Support/1E/Client"
    client.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "macho" / "fq-darwin_amd64_a_dynamic", client / "1E.Client")
    (client / "1E.Client").chmod(0o755)
    (client / "1E.Client.conf").write_text("Switch=\nBackgroundChannelUrl=\nLoggingLevel=Info\n")
    daemons = root / "Library/LaunchDaemons"
    daemons.mkdir(parents=True)
    (daemons / "com.1e.pkg.1E.Client.plist").write_bytes(plistlib.dumps(
        {"Label": "com.1e.pkg.1E.Client", "ProgramArguments": [str(Path("/") / client.relative_to(root) / "1E.Client")]}))
    pkg = work / "pkg"
    pkg.mkdir()
    subprocess.run("find . | cpio -o -H odc --quiet -R 0:0 | gzip -n > ../pkg/Payload", shell=True, cwd=root,
                   check=True)
    count = sum(1 for _ in root.rglob("*")) + 1
    (pkg / "PackageInfo").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<pkg-info format-version="2" identifier="com.1e.pkg.1E.Client" '
        f'version="5.1.0.12" install-location="/" auth="root">\n<payload numberOfFiles="{count}" '
        'installKBytes="100"/>\n</pkg-info>\n')
    out = work / "1e.client.pkg"
    subprocess.run(["bsdtar", "--format", "xar", "-cf", str(out), "-C", str(pkg), "PackageInfo", "Payload"],
                   check=True)
    return out

_KEYS: list = []


def _key(kind: str = "ec"):
    """EC keys are fast to make; a small cache of RSA keys keeps tests quick."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if not _KEYS:
        _KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _KEYS[0]


@dataclass
class CA:
    key: object
    cert: x509.Certificate


def make_ca(name: str = "Test Root CA", around: dt.datetime = NOW) -> CA:
    key = _key("ec")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(around, NOW) - dt.timedelta(days=365))
        .not_valid_after(max(around, NOW) + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def make_device(ca: CA, hostname: str, *, days: int = 365, not_before: dt.datetime | None = None,
                key_kind: str = "rsa") -> tuple[object, x509.Certificate]:
    """A certificate meeting the vendor guide's six rules for `hostname`."""
    key = _key(key_kind)
    start = not_before or NOW - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=True, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier("http://pki.example.com/root.crl")],
            relative_name=None, reasons=None, crl_issuer=None)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return key, cert


def write_pfx(path: Path, key, cert, password: str = PASSWORD, cas=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"device", key, cert, list(cas) or None,
        serialization.BestAvailableEncryption(password.encode())))
    return path


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


@dataclass
class Fleet:
    root: Path
    ca: CA
    config: Path
    csv: Path
    devices: list[str] = field(default_factory=list)


FLEET_TOML = """\
[fleet]
name = "acme-test"
organization = "ACME Corp"
identifier = "com.acme.1e-client"
build = 3

[vendor]
package = "vendor/1e.client-macOS_v5.1.0.12.pkg"

[client]
Switch = "tachyon.acme.local:4000"
BackgroundChannelUrl = "https://tachyon.acme.local/Background"
LoggingLevel = "Info"

[trust]
certificates = ["pki/root.pem"]

[devices]
inventory = "devices.csv"
password_env = "FLEET_PFX_PASSWORD"
"""


def make_fleet(root: Path, hostnames=("MAC01.local", "mac02"), *, toml: str = FLEET_TOML,
               csv_text: str | None = None, not_before: dt.datetime | None = None) -> Fleet:
    """A fleet whose every device passes the rules at NOW (password: PASSWORD via env)."""
    ca = make_ca(around=not_before or NOW)
    (root / "vendor").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vendor_standin(), root / "vendor/1e.client-macOS_v5.1.0.12.pkg")
    write_pem(root / "pki/root.pem", ca.cert)
    for h in hostnames:
        key, cert = make_device(ca, h, not_before=not_before)
        write_pfx(root / "pfx" / f"{h}.pfx", key, cert)
    if csv_text is None:
        csv_text = "hostname,pfx\n" + "".join(f"{h},pfx/{h}.pfx\n" for h in hostnames)
    (root / "devices.csv").write_text(csv_text)
    (root / "fleet.toml").write_text(toml)
    return Fleet(root, ca, root / "fleet.toml", root / "devices.csv", list(hostnames))
