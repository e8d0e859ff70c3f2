"""Builds test fleets on disk: a CA, device certificates and .pfx files made with `cryptography`
(never with fleetpkg's own code), a vendor package stand-in, fleet.toml and devices.csv."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
import atexit
import functools
import os
import plistlib
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import FIXTURES, require_tool

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
PASSWORD = "Zq7-distinctive-pfx-Passw0rd!"
OTHER_PASSWORD = "Not-the-fleet-Passw0rd-7"  # what BAD_PFX's "wrong-password" export is locked with


def _client_root(root: Path) -> int:
    """The 1E Client's files under `root`: a real x86_64 Mach-O from the fixtures as the client binary,
    its conf file and a LaunchDaemon written with plistlib. Returns cpio's entry count (with ".")."""
    client = root / "Library/Application Support/1E/Client"
    client.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "macho" / "fq-darwin_amd64_a_dynamic", client / "1E.Client")
    (client / "1E.Client").chmod(0o755)
    (client / "1E.Client.conf").write_text("Switch=\nBackgroundChannelUrl=\nLoggingLevel=Info\n")
    daemons = root / "Library/LaunchDaemons"
    daemons.mkdir(parents=True)
    (daemons / "com.1e.pkg.1E.Client.plist").write_bytes(plistlib.dumps(
        {"Label": "com.1e.pkg.1E.Client", "ProgramArguments": [str(Path("/") / client.relative_to(root) / "1E.Client")]}))
    return sum(1 for _ in root.rglob("*")) + 1


def _component_dir(dest: Path, root: Path, identifier: str, version: str, files: int,
                   postinstall_action: str | None = None) -> None:
    """A component's PackageInfo and Payload (GNU cpio odc + gzip -n) in `dest`."""
    dest.mkdir(parents=True)
    subprocess.run(f"find . | cpio -o -H odc --quiet -R 0:0 | gzip -n > '{dest}/Payload'", shell=True, cwd=root,
                   check=True)
    action = f' postinstall-action="{postinstall_action}"' if postinstall_action else ""
    (dest / "PackageInfo").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<pkg-info format-version="2" identifier="{identifier}" '
        f'version="{version}" install-location="/" auth="root"{action}>\n<payload numberOfFiles="{files}" '
        'installKBytes="100"/>\n</pkg-info>\n')


@functools.cache
def vendor_standin(postinstall_action: str | None = None) -> Path:
    """A 1E Client-shaped component package made with independent tools only: GNU cpio + gzip
    for the payload, plistlib for the LaunchDaemon, bsdtar's xar writer for the container, and
    a real x86_64 Mach-O from the fixtures as the client binary."""
    work = Path(tempfile.mkdtemp(prefix="fleetfactory-vendor-"))
    atexit.register(shutil.rmtree, work, True)
    root = work / "root"
    count = _client_root(root)
    _component_dir(work / "pkg", root, "com.1e.pkg.1E.Client", "5.1.0.12", count, postinstall_action)
    out = work / "1e.client.pkg"
    subprocess.run(["bsdtar", "--format", "xar", "-cf", str(out), "-C", str(work / "pkg"), "PackageInfo", "Payload"],
                   check=True)
    return out


# A vendor product archive in productbuild's shape whose install order is NOT alphabetical (by id or
# by NAME.pkg) nor the pkg-refs' document order: the driver first, then the client group (client,
# then agent). The driver asks for a restart, the agent (in its choice's pkg-ref) for a logout;
# extras.pkg is in the archive but no line of the outline installs it.
PRODUCT_DISTRIBUTION = """\
<?xml version="1.0" encoding="utf-8"?>
<installer-gui-script minSpecVersion="1">
    <title>1E Client</title>
    <pkg-ref id="com.1e.pkg.1E.Driver">
        <must-close>
            <app id="com.1e.Tray"/>
        </must-close>
    </pkg-ref>
    <options customize="never" require-scripts="false" hostArchitectures="x86_64,arm64"/>
    <installation-check script="agentWanted() || true"/>
    <script><![CDATA[function agentWanted() { return system.compareVersions(system.version.ProductVersion, '11.0') >= 0; }]]></script>
    <choices-outline>
        <line choice="default">
            <line choice="driver"/>
            <line choice="client_group">
                <line choice="client"/>
                <line choice="agent"/>
            </line>
        </line>
    </choices-outline>
    <choice id="default" title="1E Client" versStr="5.1.0.12"/>
    <choice id="agent" title="Agent" start_selected="agentWanted()" enabled="false">
        <pkg-ref id="com.1e.pkg.1E.Agent" onConclusion="RequireLogout"/>
    </choice>
    <choice id="client_group" title="1E Client and agent"/>
    <choice id="client" visible="false">
        <pkg-ref id="com.1e.pkg.1E.Client"/>
    </choice>
    <choice id="driver" visible="false" customLocation="/">
        <pkg-ref id="com.1e.pkg.1E.Driver"/>
    </choice>
    <choice id="extras" visible="false">
        <pkg-ref id="com.1e.pkg.1E.Extras"/>
    </choice>
    <pkg-ref id="com.1e.pkg.1E.Agent" version="5.1.0.12" onConclusion="none" installKBytes="100" auth="Root">#agent.pkg</pkg-ref>
    <pkg-ref id="com.1e.pkg.1E.Client" version="5.1.0.12" onConclusion="none" installKBytes="100" auth="Root">#client.pkg</pkg-ref>
    <pkg-ref id="com.1e.pkg.1E.Driver" version="5.1.0.12" onConclusion="RequireRestart" installKBytes="100" auth="Root" active="true">#zdriver.pkg</pkg-ref>
    <pkg-ref id="com.1e.pkg.1E.Extras" version="5.1.0.12" onConclusion="none" installKBytes="100" auth="Root">#extras.pkg</pkg-ref>
    <product id="com.1e.pkg.1E" version="5.1.0.12"/>
</installer-gui-script>
"""
PRODUCT_ORDER = ("com.1e.pkg.1E.Driver", "com.1e.pkg.1E.Client", "com.1e.pkg.1E.Agent")


@functools.cache
def vendor_product_standin(distribution: str = PRODUCT_DISTRIBUTION) -> Path:
    """A multi-component 1E-shaped product archive made with independent tools only (GNU cpio + gzip
    payloads, bsdtar's xar writer), holding `distribution` as its Distribution."""
    work = Path(tempfile.mkdtemp(prefix="fleetfactory-product-"))
    atexit.register(shutil.rmtree, work, True)
    archive = work / "archive"
    _component_dir(archive / "client.pkg", work / "client", "com.1e.pkg.1E.Client", "5.1.0.12",
                   _client_root(work / "client"))
    for name, identifier, folder in (("agent.pkg", "com.1e.pkg.1E.Agent", "Agent"),
                                     ("zdriver.pkg", "com.1e.pkg.1E.Driver", "Driver"),
                                     ("extras.pkg", "com.1e.pkg.1E.Extras", "Extras")):
        root = work / folder
        (root / "Library/Application Support/1E" / folder).mkdir(parents=True)
        (root / "Library/Application Support/1E" / folder / "readme.txt").write_text(f"{folder}\n")
        _component_dir(archive / name, root, identifier, "5.1.0.12", sum(1 for _ in root.rglob("*")) + 1)
    (archive / "Distribution").write_text(distribution)
    out = work / "1e.client-product.pkg"
    subprocess.run(["bsdtar", "--format", "xar", "-cf", str(out), "-C", str(archive), "Distribution",
                    "agent.pkg", "client.pkg", "extras.pkg", "zdriver.pkg"], check=True)
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


# A device's .pfx broken the ways real exports break, and the rule `check` must report for each.
BAD_PFX = {
    "no-key": "private-key",  # openssl pkcs12 -export -nokeys: the certificate alone
    "other-key": "private-key",  # the certificate with the key of another certificate
    "no-certificate": "pfx-no-certificate",  # openssl pkcs12 -export -nocerts: the key alone
    "wrong-password": "pfx-password",
    "truncated": "pfx-unreadable",  # a copy cut off half way
    "random": "pfx-unreadable",  # bytes that are no PKCS#12 at all
    "folder": "pfx-unreadable",  # a folder where the file should be
    "missing": "pfx-missing",
}


def write_bad_pfx(path: Path, kind: str, ca: CA, hostname: str, password: str = PASSWORD) -> Path:
    """`hostname`'s .pfx broken as BAD_PFX[kind] says, made by openssl (key/certificate mix-ups) or
    by cutting up a cryptography export: never by fleetpkg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # replaces the good export make_fleet wrote
    key, cert = make_device(ca, hostname)
    if kind in ("no-key", "other-key", "no-certificate"):
        with tempfile.TemporaryDirectory() as tmp:
            cert_pem, key_pem = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            if kind == "other-key":  # a fresh EC key: another certificate's, not this one's
                key, _ = make_device(ca, f"other-{hostname}", key_kind="ec")
            key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
            args = {"no-key": ["-nokeys", "-in", str(cert_pem)],
                    "other-key": ["-nocerts", "-inkey", str(key_pem), "-certfile", str(cert_pem)],
                    "no-certificate": ["-nocerts", "-inkey", str(key_pem)]}[kind]
            subprocess.run([require_tool("openssl"), "pkcs12", "-export", "-passout", "env:FACTORY_PFX_PW",
                            "-out", str(path), *args], check=True, capture_output=True,
                           env=dict(os.environ, FACTORY_PFX_PW=password))
    elif kind == "wrong-password":
        write_pfx(path, key, cert, password=OTHER_PASSWORD)
    elif kind == "truncated":
        whole = write_pfx(path, key, cert, password=password).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "random":
        path.write_bytes(random.Random(hostname).randbytes(2048))
    elif kind == "folder":
        path.mkdir()
    elif kind != "missing":
        raise ValueError(kind)
    return path
