"""Real certificates for the script tests, made by the openssl command line (not by fleetpkg)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cert:
    cert: Path  # PEM
    key: Path  # PEM

    def pem(self) -> str:
        return self.cert.read_text()

    def der(self) -> bytes:
        return openssl("x509", "-in", str(self.cert), "-outform", "DER")

    def sha1(self) -> str:
        out = openssl("x509", "-in", str(self.cert), "-noout", "-fingerprint", "-sha1").decode()
        return out.strip().split("=", 1)[1].replace(":", "").upper()


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr.decode()}")
    return result.stdout


def _serial() -> str:
    return str(int.from_bytes(os.urandom(8), "big") | 1)


def _key(path: Path) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def make_ca(folder: Path, name: str, issuer: Cert | None = None) -> Cert:
    """A CA certificate: self-signed root when `issuer` is None, else an intermediate."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / name.replace(" ", "_")
    key, cert = stem.with_suffix(".key"), stem.with_suffix(".pem")
    _key(key)
    ext = stem.with_suffix(".ext")
    ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                   "subjectKeyIdentifier=hash\n")
    if issuer is None:
        openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-subj", f"/O=Acme/CN={name}",
                "-days", "3650", "-extensions", "v3", "-config", _config(stem, ext))
    else:
        csr = stem.with_suffix(".csr")
        openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/O=Acme/CN={name}")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(issuer.cert), "-CAkey", str(issuer.key),
                "-set_serial", _serial(), "-days", "3650", "-out", str(cert),
                "-extfile", str(ext))
    return Cert(cert, key)


def _config(stem: Path, ext: Path) -> str:
    config = stem.with_suffix(".cnf")
    config.write_text("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + ext.read_text())
    return str(config)


def make_leaf(folder: Path, issuer: Cert, cn: str, *, san: tuple[str, ...] = (), days: int = 365) -> Cert:
    """A client-authentication certificate for `cn` (and SAN DNS names), valid for `days`."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"leaf-{cn}-{days}-{'-'.join(san)}".replace(" ", "_")
    key, cert, csr, ext = (stem.with_suffix(s) for s in (".key", ".pem", ".csr", ".ext"))
    _key(key)
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             "extendedKeyUsage=clientAuth"]
    if san:
        lines.append("subjectAltName=" + ",".join(f"DNS:{name}" for name in san))
    ext.write_text("\n".join(lines) + "\n")
    openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/O=Acme/CN={cn}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(issuer.cert), "-CAkey", str(issuer.key),
            "-set_serial", _serial(), "-days", str(days),
            "-out", str(cert), "-extfile", str(ext))
    return Cert(cert, key)


def make_p12(path: Path, leaf: Cert, chain: tuple[Cert, ...], password: str) -> bytes:
    """PKCS#12 in the encryption macOS imports (3DES, SHA-1 MAC), as the pipeline writes it."""
    bundle = path.with_suffix(".chain.pem")
    bundle.write_text("".join(c.pem() for c in chain))
    openssl("pkcs12", "-export", "-in", str(leaf.cert), "-inkey", str(leaf.key),
            "-certfile", str(bundle), "-out", str(path), "-passout", "stdin",
            "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1",
            stdin=password.encode() + b"\n")
    return path.read_bytes()
