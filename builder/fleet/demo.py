"""The built-in demo fleet: everything a real fleet has, made up on the spot, offline.

A test CA, three device identities (one expiring soon, so the build shows a warning), a stand-in
vendor package shaped like the 1E Client (identifier com.1e.pkg.1E.Client, an x86_64-only
Mach-O `1E.Client`, the default conf and the LaunchDaemon plist), signing identities for
packages and profiles, `fleet.toml` and `devices.csv`. Nothing here is trusted by a real Mac.
"""

from __future__ import annotations

import datetime as dt
import os
import plistlib
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import BuildError

VENDOR_VERSION = "5.1.0.12"
VENDOR_ID = "com.1e.pkg.1E.Client"
CLIENT_DIR = "Library/Application Support/1E/Client"
DEVICES = (("MAC01.local", "C02DEMO0001", 365), ("MAC02.local", "", 365), ("mac03.local", "C02DEMO0003", 12))
DEVELOPER_ID_INSTALLER_EKU = x509.ObjectIdentifier("1.2.840.113635.100.4.13")

VENDOR_CONF = """\
# 1E Client configuration (stand-in for the vendor default)
# Settings are Name=Value; names are not case-sensitive.
Switch=
BackgroundChannelUrl=
LoggingLevel=Info
LogFile=/Library/Logs/1E.Client.log
ModuleEnabled.Inventory=true
"""


def standin_macho() -> bytes:
    """A minimal x86_64 executable (header, __PAGEZERO, __TEXT/__text, LC_MAIN): Intel-only on purpose."""
    code = b"\x31\xc0\xc3" + b"\x90" * 13  # xor eax,eax; ret
    sizeofcmds = 72 + 152 + 24
    text_off = (32 + sizeofcmds + 15) & ~15
    filesize = text_off + len(code)

    def segment(name: str, vmaddr: int, vmsize: int, filesz: int, prot: int, sections: bytes, nsects: int) -> bytes:
        body = struct.pack("<16sQQQQiiII", name.encode(), vmaddr, vmsize, 0, filesz, prot, prot, nsects, 0)
        return struct.pack("<II", 0x19, 8 + len(body) + len(sections)) + body + sections

    section = struct.pack("<16s16sQQIIIIIIII", b"__text", b"__TEXT", 0x100000000 + text_off, len(code),
                          text_off, 4, 0, 0, 0x80000400, 0, 0, 0)
    cmds = (segment("__PAGEZERO", 0, 0x100000000, 0, 0, b"", 0)
            + segment("__TEXT", 0x100000000, 0x1000, filesize, 5, section, 1)
            + struct.pack("<IIQQ", 0x80000028, 24, text_off, 0))
    header = struct.pack("<IiiIIIII", 0xFEEDFACF, 0x01000007, 3, 2, 3, sizeofcmds, 0x00200085, 0)
    blob = header + cmds
    return blob + b"\0" * (text_off - len(blob)) + code


def launch_daemon_plist() -> bytes:
    doc = {
        "Label": VENDOR_ID,
        "ProgramArguments": [f"/{CLIENT_DIR}/1E.Client"],
        "RunAtLoad": True,
        "KeepAlive": True,
        "StandardErrorPath": "/Library/Logs/1E.Client.Daemon.log",
    }
    return plistlib.dumps(doc, sort_keys=True)


def build_standin_vendor(dest: Path) -> None:
    from ..formats.pkg.package import build_component
    from ..formats.pkg.tree import entries_from_mapping

    files = {
        f"{CLIENT_DIR}/1E.Client": (standin_macho(), 0o755),
        f"{CLIENT_DIR}/1E.Client.conf": (VENDOR_CONF.encode(), 0o644),
        f"Library/LaunchDaemons/{VENDOR_ID}.plist": (launch_daemon_plist(), 0o644),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    build_component(dest, identifier=VENDOR_ID, version=VENDOR_VERSION,
                    root=entries_from_mapping(files), scripts=None, install_location="/")


# -- demo PKI ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetpkg demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, issuer: _Issued | None, now: dt.datetime, days: int, *, ca: bool,
           eku=None, san: str | None = None, extra=()) -> _Issued:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer_name = issuer.cert.subject if issuer else _name(cn)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier("http://pki.demo.invalid/issuing.crl")],
            relative_name=None, reasons=None, crl_issuer=None)]), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    signer = issuer.key if issuer else key
    return _Issued(builder.sign(signer, hashes.SHA256()), key)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


FLEET_TOML = """\
# Demo fleet written by `fleetpkg demo`. Every certificate here comes from a throw-away test CA.
[fleet]
name = "demo"
organization = "fleetpkg demo"
identifier = "com.example.fleetpkg-demo"
build = 1

[vendor]
package = "vendor/1e.client-macOS_v{version}-standin.pkg"

[client]
Switch = "tachyon.demo.invalid:4000"
BackgroundChannelUrl = "https://tachyon.demo.invalid/Background"
LoggingLevel = "Info"

[trust]
certificates = ["pki/demo-root.cer", "pki/demo-issuing.cer"]

[devices]
inventory = "devices.csv"
password_file = "secrets/pfx-password.txt"

[signing]
installer_identity = "signing/installer.p12"
installer_password_file = "secrets/signing-password.txt"
profile_identity = "signing/profiles.p12"
profile_password_file = "secrets/signing-password.txt"

[targets]
munki = {{ catalogs = ["testing"], name = "1E-Client" }}
jamf = true
intune = true
manual = true
"""


def write_demo(folder: Path) -> Path:
    """Write the demo fleet into `folder` and return the path of its fleet.toml."""
    folder = Path(folder)
    if (folder / "fleet.toml").exists():
        raise BuildError("already holds a fleet.toml", where=str(folder),
                         hint="choose an empty folder, or run `fleetpkg build` on it")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    root = _issue("fleetpkg demo Root CA", None, now, 3650, ca=True)
    issuing = _issue("fleetpkg demo Issuing CA", root, now, 1825, ca=True)
    _write(folder / "pki" / "demo-root.cer", _pem(root.cert))
    _write(folder / "pki" / "demo-issuing.cer", _pem(issuing.cert))

    pfx_password = secrets.token_urlsafe(18)
    _write(folder / "secrets" / "pfx-password.txt", pfx_password.encode() + b"\n", 0o600)
    rows = ["hostname,pfx,serial"]
    for hostname, serial, days in DEVICES:
        dev = _issue(hostname, issuing, now, days, ca=False, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], san=hostname)
        blob = pkcs12.serialize_key_and_certificates(
            hostname.encode(), dev.key, dev.cert, [issuing.cert],
            serialization.BestAvailableEncryption(pfx_password.encode()))  # AES, as current Windows CAs export
        _write(folder / "devices" / f"{hostname}.pfx", blob, 0o600)
        rows.append(f"{hostname},devices/{hostname}.pfx,{serial}")
    _write(folder / "devices.csv", ("\n".join(rows) + "\n").encode())

    signing_password = secrets.token_urlsafe(18)
    _write(folder / "secrets" / "signing-password.txt", signing_password.encode() + b"\n", 0o600)
    installer = _issue("Developer ID Installer: fleetpkg demo (DEMO000000)", issuing, now, 365, ca=False,
                       eku=[DEVELOPER_ID_INSTALLER_EKU])
    profiles = _issue("fleetpkg demo profile signing", issuing, now, 365, ca=False,
                      eku=[ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION])
    for name, ident in (("installer", installer), ("profiles", profiles)):
        blob = pkcs12.serialize_key_and_certificates(
            name.encode(), ident.key, ident.cert, [issuing.cert, root.cert],
            serialization.BestAvailableEncryption(signing_password.encode()))
        _write(folder / "signing" / f"{name}.p12", blob, 0o600)

    build_standin_vendor(folder / "vendor" / f"1e.client-macOS_v{VENDOR_VERSION}-standin.pkg")
    _write(folder / "fleet.toml", FLEET_TOML.format(version=VENDOR_VERSION).encode())
    return folder / "fleet.toml"
