"""Test CAs, device certificates and .pfx files, built with `cryptography` (and openssl for RC2).

Shared by the certificate, profile and `check` tests: nothing here uses fleetpkg code, so the
files it makes are independent evidence. RSA key generation is the slow part, so keys come from
a small per-process pool (`rsa_key(index)`) and are reused across certificates.

    ca = make_ca()
    dev = make_device_cert(ca, "MAC01.local")                      # passes every rule
    bad = make_device_cert(ca, "MAC01.local", eku=None)            # violates eku-client-auth
    data = make_pfx(dev.certificate, dev.key, b"pw", chain=[ca.certificate], encryption="3des")
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued", "NOW", "DEFAULT", "rsa_key", "ec_key", "make_ca", "make_intermediate",
    "make_device_cert", "make_pfx", "write_pfx", "write_pem", "write_der",
]

# A fixed "now" keeps certificates (and hence test expectations) deterministic.
NOW = _dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=_dt.timezone.utc)
DAY = _dt.timedelta(days=1)

DEFAULT = object()  # "use the compliant default" marker for make_device_cert overrides

_RSA_POOL: dict[tuple[int, int], rsa.RSAPrivateKey] = {}
_EC_POOL: dict[tuple[str, int], ec.EllipticCurvePrivateKey] = {}


def rsa_key(index: int = 0, bits: int = 2048) -> rsa.RSAPrivateKey:
    """The index-th pooled RSA key of that size (generated once per process)."""
    k = (bits, index)
    if k not in _RSA_POOL:
        _RSA_POOL[k] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA_POOL[k]


def ec_key(curve: ec.EllipticCurve | None = None, index: int = 0) -> ec.EllipticCurvePrivateKey:
    curve = curve or ec.SECP256R1()
    k = (curve.name, index)
    if k not in _EC_POOL:
        _EC_POOL[k] = ec.generate_private_key(curve)
    return _EC_POOL[k]


@dataclass(frozen=True)
class Issued:
    """A certificate and the private key that belongs to it."""

    certificate: x509.Certificate
    key: object = field(repr=False)

    @property
    def subject(self) -> x509.Name:
        return self.certificate.subject


def _name(cn: str, org: str = "Fleetpkg Test") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


_serial = [0x1000]


def _next_serial() -> int:
    _serial[0] += 1
    return _serial[0]


def _ca_extensions(builder: x509.CertificateBuilder, key, issuer: Issued | None,
                   path_length: int | None) -> x509.CertificateBuilder:
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False), critical=True)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    signer = issuer.key if issuer else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    return builder


def make_ca(name: str = "Fleetpkg Test Root CA", *, key=None,
            not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None,
            hash_alg: hashes.HashAlgorithm | None = None, key_index: int = 10,
            extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> Issued:
    """A self-signed root CA (RFC 5280 / Web PKI conformant extensions).

    extensions: extra (extension, critical) pairs, e.g. NameConstraints."""
    key = key or rsa_key(key_index)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(name)).issuer_name(_name(name))
               .public_key(key.public_key()).serial_number(_next_serial())
               .not_valid_before(not_before or NOW - 3650 * DAY)
               .not_valid_after(not_after or NOW + 3650 * DAY))
    builder = _ca_extensions(builder, key, None, None)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(_sign(builder, key, hash_alg), key)


def make_intermediate(parent: Issued, name: str = "Fleetpkg Test Issuing CA", *, key=None,
                      not_before: _dt.datetime | None = None, not_after: _dt.datetime | None = None,
                      hash_alg: hashes.HashAlgorithm | None = None, key_index: int = 11,
                      path_length: int | None = 0,
                      extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> Issued:
    """A CA certificate signed by `parent` (extensions: extra (extension, critical) pairs)."""
    key = key or rsa_key(key_index)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(name)).issuer_name(parent.certificate.subject)
               .public_key(key.public_key()).serial_number(_next_serial())
               .not_valid_before(not_before or NOW - 1825 * DAY)
               .not_valid_after(not_after or NOW + 1825 * DAY))
    builder = _ca_extensions(builder, key, parent, path_length)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(_sign(builder, parent.key, hash_alg), key)


def make_device_cert(
    ca: Issued | None,
    hostname: str,
    *,
    key=None,
    key_index: int = 0,
    cn=DEFAULT,
    san_dns=DEFAULT,
    eku=DEFAULT,
    key_usage=DEFAULT,
    crl_urls=DEFAULT,
    ocsp_url: str | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
    self_signed: bool = False,
    serial: int | None = None,
) -> Issued:
    """A device (leaf) certificate that meets every rule unless an override breaks one.

    Overrides (DEFAULT = compliant value, None = leave the extension out):
      cn         subject CN (default: hostname; None: subject without CN)
      san_dns    list of SAN DNS names (default: [hostname]; None: no SAN extension)
      eku        list of EKU OIDs (default: [clientAuth]; None: no EKU extension)
      key_usage  dict of KeyUsage flags set True (default: digital_signature + key_encipherment)
      crl_urls   list of CRL DP URIs (default: one http:// URL; None: no CDP extension)
      ocsp_url   adds an AIA OCSP entry
      self_signed  sign with the device key itself (issuer = subject); `ca` is then ignored
    """
    key = key or rsa_key(key_index)
    cn_value = hostname if cn is DEFAULT else cn
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleetpkg Test Devices")]
                        + ([x509.NameAttribute(NameOID.COMMON_NAME, cn_value)] if cn_value else []))
    issuer_name = subject if self_signed or ca is None else ca.certificate.subject
    signer = key if self_signed or ca is None else ca.key
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(serial or _next_serial())
               .not_valid_before(not_before or NOW - 30 * DAY)
               .not_valid_after(not_after or NOW + 365 * DAY))
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    sans = [hostname] if san_dns is DEFAULT else san_dns
    if sans is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    ekus = [ExtendedKeyUsageOID.CLIENT_AUTH] if eku is DEFAULT else eku
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    ku = {"digital_signature": True, "key_encipherment": True} if key_usage is DEFAULT else key_usage
    if ku is not None:
        flags = dict.fromkeys(["digital_signature", "content_commitment", "key_encipherment",
                               "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                               "encipher_only", "decipher_only"], False)
        flags.update(ku)
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    urls = ["http://pki.fleetpkg.test/crl/issuing.crl"] if crl_urls is DEFAULT else crl_urls
    if urls is not None:
        builder = builder.add_extension(x509.CRLDistributionPoints([
            x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u)], relative_name=None,
                                   reasons=None, crl_issuer=None) for u in urls]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    return Issued(_sign(builder, signer, hash_alg), key)


# sha256WithRSAEncryption and the same-length legacy AlgorithmIdentifiers it is swapped for.
_RSA_SHA256_ALG = bytes.fromhex("300d06092a864886f70d01010b0500")
_RSA_LEGACY_ALG = {"sha1": bytes.fromhex("300d06092a864886f70d0101050500"),
                   "md5": bytes.fromhex("300d06092a864886f70d0101040500")}


def _sign(builder: x509.CertificateBuilder, signer, hash_alg: hashes.HashAlgorithm | None):
    """builder.sign(), plus RSA with SHA-1/MD5, which cryptography 48 refuses to sign certificates
    with: sign with SHA-256, swap the (same-length) AlgorithmIdentifiers and re-sign the TBS."""
    name = hash_alg.name if hash_alg else "sha256"
    if name not in _RSA_LEGACY_ALG:
        return builder.sign(signer, hash_alg or hashes.SHA256())
    assert isinstance(signer, rsa.RSAPrivateKey), "legacy hashes are only built for RSA signers"
    cert = builder.sign(signer, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(_RSA_SHA256_ALG) == 2
    tbs = cert.tbs_certificate_bytes.replace(_RSA_SHA256_ALG, _RSA_LEGACY_ALG[name])
    from cryptography.hazmat.primitives.asymmetric import padding
    sig = signer.sign(tbs, padding.PKCS1v15(), hash_alg)
    assert len(sig) == len(cert.signature) and der.endswith(cert.signature)
    new = der[: -len(sig)].replace(_RSA_SHA256_ALG, _RSA_LEGACY_ALG[name]) + sig
    return x509.load_der_x509_certificate(new)


# -- PKCS#12 ---------------------------------------------------------------------------------

def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pfx(cert: x509.Certificate | None, key, password: bytes,
             chain: Sequence[x509.Certificate] = (), *, encryption: str = "aes",
             friendly_name: bytes | None = None, iterations: int = 2048,
             mac: str | None = None) -> bytes:
    """A .pfx as Windows/OpenSSL would write it.

    encryption: "aes"  PBES2/PBKDF2-HMAC-SHA256/AES-256-CBC for both bags, SHA-256 MAC (Windows
                       "AES256-SHA256", OpenSSL 3 default) -- via cryptography
                "3des" pbeWithSHAAnd3-KeyTripleDES-CBC for both bags, SHA-1 MAC -- via cryptography
                "rc2"  key 3DES, certificates pbeWithSHAAnd40BitRC2-CBC, SHA-1 MAC (older Windows
                       CAs, Keychain Access) -- via `openssl pkcs12 -export -legacy`
                "none" no bag encryption (cryptography NoEncryption)
    mac: override the MAC hash ("sha1"/"sha256") for "aes"/"3des".
    iterations: the bags' KDF rounds (cryptography always gives the MAC 2048 iterations).
    """
    if encryption == "rc2":
        return openssl_pfx(cert, key, password, chain, "-legacy", "-iter", str(iterations),
                           friendly_name=friendly_name)
    if encryption == "none":
        enc = serialization.NoEncryption()
    else:
        alg = {"aes": pkcs12.PBES.PBESv2SHA256AndAES256CBC,
               "3des": pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC}[encryption]
        mac_name = mac or ("sha256" if encryption == "aes" else "sha1")
        mac_hash = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[mac_name]
        enc = (serialization.PrivateFormat.PKCS12.encryption_builder()
               .kdf_rounds(iterations).key_cert_algorithm(alg).hmac_hash(mac_hash).build(password))
    return pkcs12.serialize_key_and_certificates(friendly_name, key, cert, list(chain) or None, enc)


def openssl_pfx(cert, key, password: bytes, chain: Sequence[x509.Certificate] = (), *options: str,
                friendly_name: bytes | None = None) -> bytes:
    """A .pfx written by `openssl pkcs12 -export` with its algorithm `options` (e.g. "-legacy")."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        args = ["openssl", "pkcs12", "-export", *options, "-passout", "env:FACTORY_PFX_PW",
                "-out", str(t / "out.p12")]
        if key is not None:
            (t / "key.pem").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            args += ["-inkey", str(t / "key.pem")]
        else:
            args += ["-nokeys"]
        if cert is not None:
            (t / "cert.pem").write_bytes(_pem(cert))
            args += ["-in", str(t / "cert.pem")]
        else:
            args += ["-nocerts"]
        if chain:
            (t / "chain.pem").write_bytes(b"".join(_pem(c) for c in chain))
            args += ["-certfile", str(t / "chain.pem")]
        if friendly_name:
            args += ["-name", friendly_name.decode()]
        env = dict(os.environ, FACTORY_PFX_PW=password.decode())
        subprocess.run(args, check=True, env=env, capture_output=True)
        return (t / "out.p12").read_bytes()


def write_pfx(path: Path, cert: x509.Certificate | None, key, password: bytes,
              chain: Sequence[x509.Certificate] = (), **kwargs) -> Path:
    """make_pfx(...) written to `path` (mode 0600, as a file holding a private key should be)."""
    path = Path(path)
    path.write_bytes(make_pfx(cert, key, password, chain, **kwargs))
    path.chmod(0o600)
    return path


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    """A PEM bundle holding `certs` in order."""
    path = Path(path)
    path.write_bytes(b"".join(_pem(c) for c in certs))
    return path


def write_der(path: Path, cert: x509.Certificate) -> Path:
    """A DER .cer file (as Windows' "DER encoded binary X.509" export)."""
    path = Path(path)
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path
