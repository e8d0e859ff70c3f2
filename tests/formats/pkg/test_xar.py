"""xar layer: checked against real fixtures, bsdtar (libarchive), openssl and hand-built archives.

Hand-built archives are assembled here with struct/zlib/hashlib, independently of the code under
test, so the reader is never only checked against its own writer.
"""

from __future__ import annotations

import base64
import bz2
import datetime
import hashlib
import io
import lzma
import os
import shutil
import struct
import subprocess
import tracemalloc
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import BuildError, ChecksumError, FleetpkgError, FormatError, UnsupportedError
from builder.formats.pkg.xar import XarReader, XarWriter, resign
from tests.conftest import FIXTURES, require_tool

PKG_DIR = FIXTURES / "pkg"
FIXTURE_PKGS = sorted(PKG_DIR.glob("*.pkg"))
SIGNED = PKG_DIR / "installomator-Installomator-0.5-c53f9d1b.pkg"
RELIC = PKG_DIR / "relic-dummy.pkg"
B64 = ' enctype="base64"'
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------------------------
# Independent helpers


def run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, check=check, **kw)


def bsdtar_list(path: Path) -> dict[str, int]:
    """path -> size as `bsdtar -tv` shows it (names here never contain spaces)."""
    require_tool("bsdtar")
    out = run("bsdtar", "-tvf", path).stdout.decode()
    listing = {}
    for line in out.splitlines():
        fields = line.split(None, 8)
        listing[fields[8]] = int(fields[4])
    return listing


def bsdtar_extract(path: Path, dest: Path) -> dict[str, bytes]:
    require_tool("bsdtar")
    dest.mkdir(parents=True, exist_ok=True)
    run("bsdtar", "-xf", path, "-C", dest)
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def raw_toc(path: Path) -> tuple[tuple, bytes, bytes]:
    """(header fields, compressed TOC, TOC XML), parsed with struct/zlib only."""
    data = path.read_bytes()
    header = struct.unpack(">4sHHQQI", data[:28])
    comp = data[header[1]:header[1] + header[3]]
    return header, comp, zlib.decompress(comp)


def data_offsets(xml: bytes) -> dict[str, tuple[int, int]]:
    """path -> (heap offset, length) from a TOC, via ElementTree."""
    found = {}

    def walk(el, prefix):
        for f in el.findall("file"):
            path = prefix + f.findall("name")[-1].text
            d = f.find("data")
            if d is not None:
                found[path] = (int(d.find("offset").text), int(d.find("length").text))
            walk(f, path + "/")

    walk(ET.fromstring(xml).find("toc"), "")
    return found


def make_xar(toc_xml: str | bytes, heap_tail: bytes = b"", *, alg: int = 1, hsize: int = 28,
             version: int = 1, extra_header: bytes = b"") -> bytes:
    """A xar built by hand: header, zlib TOC, TOC checksum at heap 0, then heap_tail."""
    if isinstance(toc_xml, str):
        toc_xml = toc_xml.encode()
    comp = zlib.compress(toc_xml)
    name = {1: "sha1", 2: "md5", 3: "sha256", 4: "sha512"}[alg]
    header = struct.pack(">4sHHQQI", b"xar!", hsize, version, len(comp), len(toc_xml), alg)
    header += extra_header.ljust(hsize - 28, b"\0")
    return header + comp + hashlib.new(name, comp).digest() + heap_tail


def file_xml(fid: int, name: str, data: bytes, *, offset: int, encoding="application/octet-stream",
             stored: bytes | None = None, style="sha1", extra="", name_attr="") -> str:
    stored = data if stored is None else stored
    return (f'<file id="{fid}"><data><length>{len(stored)}</length><offset>{offset}</offset>'
            f'<size>{len(data)}</size><encoding style="{encoding}"/>'
            f'<extracted-checksum style="{style}">{hashlib.sha1(data).hexdigest()}</extracted-checksum>'
            f'<archived-checksum style="{style}">{hashlib.sha1(stored).hexdigest()}</archived-checksum>'
            f'</data>{extra}<type>file</type><name{name_attr}>{name}</name></file>')


def toc_doc(files: str, style: str = "sha1", size: int = 20) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<xar><toc><creation-time>2020-01-01T00:00:00'
            f'</creation-time><checksum style="{style}"><offset>0</offset><size>{size}</size></checksum>'
            f'{files}</toc></xar>')


def read_everything(source) -> None:
    """Open and fully read every member (bounded), as a consumer would."""
    with XarReader(source) as reader:
        for entry in reader.entries:
            if entry.type == "file":
                reader.read(entry, max_size=1 << 20)
                for _ in reader.iter_stored(entry):
                    pass
        for sig in (reader.signature, reader.x_signature):
            if sig is not None:
                reader.read_signature(sig)


def only_fleetpkg_errors(data: bytes) -> None:
    try:
        read_everything(io.BytesIO(data))
    except FleetpkgError:
        pass


# ----------------------------------------------------------------------------------------------
# Signing material (made with cryptography, not by the code under test)


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


class DummySigner:
    """RSA PKCS#1 v1.5/SHA-1 over the checksum (as productsign) and a detached CMS."""

    def __init__(self, label: str, cms_size: int = 4096):
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _cert(f"{label} CA", ca_key, None, ca_key, True)
        self.leaf = _cert(f"{label} Installer", self.key, self.ca.subject, ca_key, False)
        self.rsa_size = 256
        self.cms_size = cms_size
        self.certificates = [c.public_bytes(serialization.Encoding.DER) for c in (self.leaf, self.ca)]
        self.signed: list[bytes] = []

    def sign(self, toc_checksum: bytes) -> tuple[bytes, bytes]:
        self.signed.append(toc_checksum)
        sig = self.key.sign(toc_checksum, padding.PKCS1v15(), hashes.SHA1())
        cms = (pkcs7.PKCS7SignatureBuilder().set_data(toc_checksum)
               .add_signer(self.leaf, self.key, hashes.SHA256()).add_certificate(self.ca)
               .sign(serialization.Encoding.DER,
                     [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary,
                      pkcs7.PKCS7Options.NoCapabilities]))
        return sig, cms

    def pub_pem(self, tmp: Path) -> Path:
        path = tmp / "pub.pem"
        path.write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return path


@pytest.fixture(scope="module")
def signer_a():
    return DummySigner("Alpha")


@pytest.fixture(scope="module")
def signer_b():
    return DummySigner("Beta", cms_size=5000)


def openssl_verify_rsa(pub: Path, checksum: bytes, sig: bytes, tmp: Path) -> str:
    require_tool("openssl")
    (tmp / "checksum.bin").write_bytes(checksum)
    (tmp / "rsa.bin").write_bytes(sig)
    res = run("openssl", "dgst", "-sha1", "-verify", pub, "-signature", tmp / "rsa.bin",
              tmp / "checksum.bin", check=False)
    return res.stdout.decode().strip()


def check_signed_layout(path: Path, signer: DummySigner, tmp: Path) -> None:
    """Independent check of a signed archive: checksum at heap 0, signatures at reserved offsets."""
    header, comp, xml = raw_toc(path)
    data = path.read_bytes()
    heap = 28 + header[3]
    checksum = data[heap:heap + 20]
    assert checksum == hashlib.sha1(comp).digest()
    toc = ET.fromstring(xml).find("toc")
    cks = toc.find("checksum")
    assert (cks.get("style"), cks.find("offset").text, cks.find("size").text) == ("sha1", "0", "20")
    sig, xsig = toc.find("signature"), toc.find("x-signature")
    assert sig.get("style") == "RSA" and xsig.get("style") == "CMS"
    assert (int(sig.find("offset").text), int(sig.find("size").text)) == (20, 256)
    assert (int(xsig.find("offset").text), int(xsig.find("size").text)) == (276, signer.cms_size)
    ns = "{http://www.w3.org/2000/09/xmldsig#}"
    for el in (sig, xsig):
        certs = [base64.b64decode("".join(c.text.split()))
                 for c in el.findall(f"{ns}KeyInfo/{ns}X509Data/{ns}X509Certificate")]
        assert certs == signer.certificates
    rsa_blob = data[heap + 20:heap + 276]
    assert openssl_verify_rsa(signer.pub_pem(tmp), checksum, rsa_blob, tmp) == "Verified OK"
    cms_blob = data[heap + 276:heap + 276 + signer.cms_size]
    # the CMS DER, without the zero padding of its reserved slot (cut by its own length: the
    # signature can itself end in zero bytes)
    assert cms_blob[:2] == b"\x30\x82"
    (tmp / "cms.bin").write_bytes(cms_blob[:4 + int.from_bytes(cms_blob[2:4], "big")])
    res = run("openssl", "cms", "-verify", "-inform", "DER", "-in", tmp / "cms.bin", "-content",
              tmp / "checksum.bin", "-binary", "-noverify", "-out", os.devnull, check=False)
    assert res.returncode == 0, res.stderr
    first = min(off for off, _ in data_offsets(xml).values())
    assert first == 20 + 256 + signer.cms_size


def build_tree(path: Path, src_dir: Path, signer=None, *, order=None) -> dict[str, bytes]:
    """A nested tree with stored and gzip members; returns path -> expected bytes."""
    src_dir.mkdir(parents=True, exist_ok=True)
    big = src_dir / "big.bin"
    big.write_bytes(os.urandom(5 << 20) + b"tail")  # large: referenced, not spooled
    expected = {
        "Distribution": b"<installer-gui-script/>\n" * 50,
        "ours.pkg/Bom": bytes(range(256)) * 40,
        "ours.pkg/PackageInfo": b"<pkg-info/>\n",
        "ours.pkg/Payload": big.read_bytes(),
        "ours.pkg/Scripts": b"",
        "Resources/en.lproj/welcome.txt": "caf\u00e9\n".encode(),
    }
    steps = [
        lambda w: w.add_bytes("Distribution", expected["Distribution"], compress=True),
        lambda w: w.add_bytes("ours.pkg/Bom", expected["ours.pkg/Bom"], compress=True),
        lambda w: w.add_bytes("ours.pkg/PackageInfo", expected["ours.pkg/PackageInfo"], compress=True),
        lambda w: w.add_file("ours.pkg/Payload", big),
        lambda w: w.add_bytes("ours.pkg/Scripts", b"", compress=False),
        lambda w: w.add_bytes("Resources/en.lproj/welcome.txt", expected["Resources/en.lproj/welcome.txt"],
                              compress=True),
        lambda w: w.add_directory("ours.pkg", mode=0o700),
    ]
    with XarWriter(path, signer=signer, creation_time=1_700_000_000) as w:
        for i in (order or range(len(steps))):
            steps[i](w)
    return expected


# ----------------------------------------------------------------------------------------------
# Reading real fixtures


@pytest.mark.parametrize("fixture", FIXTURE_PKGS, ids=lambda p: p.name)
def test_fixture_matches_bsdtar(fixture: Path, tmp_path: Path):
    listing = bsdtar_list(fixture)
    extracted = bsdtar_extract(fixture, tmp_path / "x")
    with XarReader(fixture) as reader:
        assert reader.header_size == 28 and reader.checksum_alg == "sha1"
        ours = {e.path: (e.data.size if e.data else 0) for e in reader.entries}
        assert ours == listing
        files = {e.path: reader.read(e) for e in reader.entries if e.type == "file"}
        assert files == extracted
        for e in reader.entries:
            if e.type == "file":
                assert b"".join(reader.iter_data(e, chunk_size=7)) == files[e.path]
        assert reader.stored_toc_checksum == hashlib.sha1(reader.toc_compressed).digest()
        assert reader.heap_data_end() <= reader.file_size - reader.heap_offset


def test_fixture_from_file_object_and_metadata():
    with open(RELIC, "rb") as f:
        with XarReader(f) as reader:
            assert reader.read("Distribution").startswith(b"<?xml")
        assert not f.closed  # a caller's file object is left to the caller
    with XarReader(RELIC) as reader:
        entry = reader.get("com.sas.dummy.pkg/Payload")
        assert entry.type == "file" and entry.mode == 0o644 and entry.uid == 501
        assert entry.user == "dawnbreaker" and entry.group == "staff"
        assert entry.data.encoding == "application/octet-stream"
        assert reader.get("com.sas.dummy.pkg").type == "directory"
        assert reader.get("com.sas.dummy.pkg").mode == 0o700
        # document order, not id order (Distribution is id 5 but comes first in this TOC)
        assert [e.id for e in reader.entries] == [5, 1, 2, 3, 4]
        assert reader.creation_time == "2021-07-06T16:06:04"
        assert reader.signature is None and reader.x_signature is None


def test_signed_fixture_signatures(tmp_path: Path):
    with XarReader(SIGNED) as reader:
        sig, xsig = reader.signature, reader.x_signature
        assert (sig.style, sig.offset, sig.size) == ("RSA", 20, 256)
        assert (xsig.style, xsig.offset, xsig.size) == ("CMS", 276, 9216)
        for s in (sig, xsig):
            certs = [x509.load_der_x509_certificate(der) for der in s.certificates]
            cns = [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in certs]
            assert cns == ["Developer ID Installer: Armin Briegel (JME5BW3F3R)",
                           "Developer ID Certification Authority", "Apple Root CA"]
        leaf = x509.load_der_x509_certificate(sig.certificates[0])
        pub = tmp_path / "leaf.pem"
        pub.write_bytes(leaf.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        assert openssl_verify_rsa(pub, reader.stored_toc_checksum, reader.read_signature(sig),
                                  tmp_path) == "Verified OK"
        # stapled notarization ticket after the heap is ignored, not misread as data
        trailer = reader.read_heap(reader.heap_data_end(), 4)
        assert trailer == b"t8lr"


def test_homebrew_container_is_a_plain_xar():
    with XarReader(PKG_DIR / "homebrew-container.pkg") as reader:
        assert [e.path for e in reader.entries] == ["Naked", "Naked/FAKE_PACKAGE_WATCH_OUT.txt"]
        assert reader.read("Naked/FAKE_PACKAGE_WATCH_OUT.txt") == b""
        with pytest.raises(FormatError, match="directory"):
            reader.read("Naked")
        with pytest.raises(FormatError, match="no member"):
            reader.read("missing")


# ----------------------------------------------------------------------------------------------
# Writer


def test_writer_output_read_by_bsdtar(tmp_path: Path):
    out = tmp_path / "out.pkg"
    expected = build_tree(out, tmp_path / "src")
    listing = bsdtar_list(out)
    assert listing == {"Distribution": len(expected["Distribution"]), "Resources": 0, "Resources/en.lproj": 0,
                       **{k: len(v) for k, v in expected.items() if k != "Distribution"}, "ours.pkg": 0}
    assert bsdtar_extract(out, tmp_path / "x") == expected
    header, comp, xml = raw_toc(out)
    assert header[:3] == (b"xar!", 28, 1) and header[5] == 1
    data = out.read_bytes()
    assert data[28 + header[3]:28 + header[3] + 20] == hashlib.sha1(comp).digest()
    toc = ET.fromstring(xml).find("toc")
    assert toc.find("creation-time").text == "2023-11-14T22:13:20"
    # ids 1..n in document order, heap offsets increasing in the same order, directories implied
    files = list(toc.iter("file"))
    assert [int(f.get("id")) for f in files] == list(range(1, len(files) + 1))
    names = [f.find("name").text for f in files]
    assert names == ["Distribution", "Resources", "en.lproj", "welcome.txt", "ours.pkg", "Bom",
                     "PackageInfo", "Payload", "Scripts"]
    offsets = [int(f.find("data/offset").text) for f in files if f.find("data") is not None]
    assert offsets == sorted(offsets) and offsets[0] == 20
    encodings = {f.find("name").text: f.find("data/encoding").get("style") for f in files
                 if f.find("data") is not None}
    assert encodings["Payload"] == encodings["Scripts"] == "application/octet-stream"
    assert encodings["Bom"] == encodings["Distribution"] == "application/x-gzip"
    modes = {f.find("name").text: f.find("mode").text for f in files}
    assert modes["ours.pkg"] == "0700" and modes["Resources"] == "0755" and modes["Bom"] == "0644"
    with XarReader(out) as reader:
        assert {e.path: reader.read(e) for e in reader.entries if e.type == "file"} == expected


def test_writer_is_deterministic(tmp_path: Path, monkeypatch):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes((i * 7919) % 251 for i in range(300_000)))

    def build(out: Path, order: list[int]) -> str:
        steps = [lambda w: w.add_bytes("b.pkg/PackageInfo", b"<pkg-info/>", compress=True),
                 lambda w: w.add_file("b.pkg/Payload", payload),
                 lambda w: w.add_bytes("Distribution", b"<d/>", compress=True),
                 lambda w: w.add_directory("b.pkg", mode=0o700),
                 lambda w: w.add_bytes("Resources/en.lproj/License.txt", b"MIT", compress=True)]
        with XarWriter(out) as w:  # creation time comes from SOURCE_DATE_EPOCH
            for j in order:
                steps[j](w)
        return hashlib.sha256(out.read_bytes()).hexdigest()

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    digests = {build(tmp_path / f"o{i}.pkg", order)
               for i, order in enumerate([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 3, 1]])}
    assert len(digests) == 1
    _, _, xml = raw_toc(tmp_path / "o0.pkg")
    assert b"<creation-time>2009-02-13T23:31:30</creation-time>" in xml
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567891")
    assert build(tmp_path / "later.pkg", [0, 1, 2, 3, 4]) not in digests


def test_writer_in_memory_is_byte_identical_and_makes_one_file(tmp_path: Path, monkeypatch):
    """in_memory=True gives the same archive as the spooled writer, with no spool file, and
    the output has `mode` from the moment it appears under its name."""
    import tempfile as tempfile_module

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes((i * 7919) % 251 for i in range(300_000)))
    with XarReader(RELIC) as vendor:
        stored = vendor.get("com.sas.dummy.pkg/Payload")

        def build(out: Path, **kw) -> bytes:
            with XarWriter(out, **kw) as w:
                w.add_bytes("b.pkg/PackageInfo", b"<pkg-info/>", compress=True)
                w.add_file("b.pkg/Payload", payload)
                w.add_stored("v.pkg/Payload", vendor, stored)
                w.add_bytes("Distribution", b"<d/>" * 1000, compress=True, mode=0o600)
            return out.read_bytes()

        spooled = build(tmp_path / "spooled.pkg")
        monkeypatch.setattr(tempfile_module, "TemporaryFile", None)  # any spool file now fails
        made = build(tmp_path / "memory.pkg", in_memory=True, mode=0o600)
    assert made == spooled
    assert (tmp_path / "memory.pkg").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "spooled.pkg").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.pkg", "payload.bin", "spooled.pkg"]
    assert bsdtar_list(tmp_path / "memory.pkg")  # bsdtar reads it (and checks every member)


def test_writer_sha256_toc(tmp_path: Path):
    out = tmp_path / "s.pkg"
    with XarWriter(out, checksum_alg="sha256", creation_time=0) as w:
        w.add_bytes("hello", b"hello\n", compress=True)
    header, comp, xml = raw_toc(out)
    assert header[5] == 3
    assert out.read_bytes()[28 + header[3]:28 + header[3] + 32] == hashlib.sha256(comp).digest()
    assert b'<checksum style="sha256">' in xml and b"<size>32</size>" in xml
    with XarReader(out) as reader:
        assert reader.checksum_alg == "sha256" and reader.read("hello") == b"hello\n"


def test_writer_memory_is_flat(tmp_path: Path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    out = tmp_path / "big.pkg"
    tracemalloc.start()
    try:
        with XarWriter(out, creation_time=0) as w:
            w.add_file("Payload", big)
            w.add_file("Payload.z", big, compress=True)
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with XarReader(out) as reader:
            for name in ("Payload", "Payload.z"):
                h = hashlib.sha256()
                for chunk in reader.iter_data(name):
                    h.update(chunk)
                assert h.hexdigest() == want
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_write < 8 << 20 and peak_read < 8 << 20, (peak_write, peak_read)


def test_writer_refuses_bad_input(tmp_path: Path):
    out = tmp_path / "bad.pkg"
    w = XarWriter(out, creation_time=0)
    for bad in ("../x", "/abs", "a\x00b", "a/./b", "a//b", "", "a/"):
        with pytest.raises(BuildError):
            w.add_bytes(bad, b"x", compress=False)
    w.add_bytes("f", b"x", compress=False)
    with pytest.raises(BuildError, match="duplicate"):
        w.add_bytes("f", b"y", compress=False)
    with pytest.raises(BuildError, match="is a file"):
        w.add_bytes("f/g", b"y", compress=False)
    with pytest.raises(BuildError):
        w.add_file("g", tmp_path / "missing")
    w.abort()
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with XarWriter(out, creation_time=0) as w2:
            w2.add_bytes("x", b"1", compress=False)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no output, no temp left behind


def test_add_stored_embeds_vendor_component_byte_for_byte(tmp_path: Path):
    out = tmp_path / "wrap.pkg"
    with XarReader(RELIC) as vendor, XarWriter(out, creation_time=0) as w:
        w.add_bytes("Distribution", b"<installer-gui-script/>", compress=True)
        comp = [e for e in vendor.entries if e.path.startswith("com.sas.dummy.pkg/")]
        for e in comp:
            w.add_stored("vendor.pkg/" + e.name, vendor, e)
        w.add_directory("vendor.pkg", mode=0o700)
        vendor_meta = {e.name: (e.mode if e.mode is not None else 0o644, e.uid or 0, e.gid or 0,
                                e.user if e.uid is not None else "root",
                                e.group if e.gid is not None else "wheel") for e in comp}
        assert vendor_meta["Payload"][1:] == (501, 20, "dawnbreaker", "staff")
        originals = {e.name: (e.data, hashlib.sha256(b"".join(vendor.iter_stored(e))).hexdigest())
                     for e in comp}
    with XarReader(out) as wrapped:
        for name, (data, digest) in originals.items():
            entry = wrapped.get("vendor.pkg/" + name)
            got = entry.data
            assert (got.length, got.size, got.encoding, got.archived_checksum, got.extracted_checksum) == \
                (data.length, data.size, data.encoding, data.archived_checksum, data.extracted_checksum)
            assert hashlib.sha256(b"".join(wrapped.iter_stored(entry))).hexdigest() == digest
            source = vendor_meta[name]
            assert (entry.mode, entry.uid, entry.gid, entry.user, entry.group) == source
    original = bsdtar_extract(RELIC, tmp_path / "orig")
    embedded = bsdtar_extract(out, tmp_path / "wrap")
    for name in originals:
        assert embedded["vendor.pkg/" + name] == original["com.sas.dummy.pkg/" + name]


def test_add_stored_large_member_is_copied_verbatim(tmp_path: Path):
    """Large members take the kernel-copy path; the bytes must still be identical."""
    big = tmp_path / "payload"
    big.write_bytes(os.urandom(6 << 20))
    comp = tmp_path / "comp.pkg"
    with XarWriter(comp, creation_time=0) as w:
        w.add_file("Payload", big)
        w.add_file("Bom", big, compress=True)
    out = tmp_path / "wrap.pkg"
    with XarReader(comp) as src, XarWriter(out, creation_time=0) as w:
        for e in src.entries:
            w.add_stored("x.pkg/" + e.path, src, e)
    assert _stored_digests(out) == {"x.pkg/" + k: v for k, v in _stored_digests(comp).items()}
    assert bsdtar_extract(out, tmp_path / "x") == {"x.pkg/Bom": big.read_bytes(), "x.pkg/Payload": big.read_bytes()}


def test_source_changed_before_close_is_refused(tmp_path: Path):
    big = tmp_path / "payload"
    big.write_bytes(bytes(6 << 20))
    out = tmp_path / "out.pkg"
    with pytest.raises(BuildError, match="changed"):
        with XarWriter(out, creation_time=0) as w:
            w.add_file("Payload", big)
            with open(big, "ab") as f:
                f.write(b"late")
    assert not out.exists()


def test_add_stored_verifies_while_copying(tmp_path: Path):
    damaged = tmp_path / "damaged.pkg"
    data = bytearray(RELIC.read_bytes())
    _, _, xml = raw_toc(RELIC)
    off, length = data_offsets(xml)["com.sas.dummy.pkg/Payload"]
    heap = 28 + struct.unpack(">Q", data[8:16])[0]
    data[heap + off + length // 2] ^= 0x01
    damaged.write_bytes(data)
    out = tmp_path / "wrap.pkg"
    with XarReader(damaged) as vendor:
        with pytest.raises(ChecksumError, match="com.sas.dummy.pkg/Payload"):
            with XarWriter(out, creation_time=0) as w:
                w.add_stored("v.pkg/Payload", vendor, vendor.get("com.sas.dummy.pkg/Payload"))
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# Signing hooks and resign


def test_signed_writer_layout(tmp_path: Path, signer_a: DummySigner):
    out = tmp_path / "signed.pkg"
    expected = build_tree(out, tmp_path / "src", signer=signer_a)
    check_signed_layout(out, signer_a, tmp_path)
    assert bsdtar_extract(out, tmp_path / "x") == expected
    with XarReader(out) as reader:
        assert signer_a.signed[-1] == reader.stored_toc_checksum
        assert reader.signature.certificates == tuple(signer_a.certificates)
        assert (reader.x_signature.offset, reader.x_signature.size) == (276, signer_a.cms_size)


def test_signer_contract_enforced(tmp_path: Path, signer_a: DummySigner):
    class Short(DummySigner):
        def sign(self, checksum):
            rsa_sig, cms = super().sign(checksum)
            return rsa_sig[:-1], cms

    class Big(DummySigner):
        def sign(self, checksum):
            return super().sign(checksum)[0], b"\1" * (self.cms_size + 1)

    for cls in (Short, Big):
        out = tmp_path / "x.pkg"
        with pytest.raises(FleetpkgError):
            with XarWriter(out, creation_time=0, signer=cls("X")) as w:
                w.add_bytes("a", b"a", compress=False)
        assert not out.exists()


def _stored_digests(path: Path) -> dict[str, str]:
    with XarReader(path) as reader:
        return {e.path: hashlib.sha256(b"".join(reader.iter_stored(e))).hexdigest()
                for e in reader.entries if e.data is not None}


def test_resign_keeps_data_and_replaces_signature(tmp_path: Path, signer_a, signer_b):
    signed = tmp_path / "a.pkg"
    expected = build_tree(signed, tmp_path / "src", signer=signer_a)
    before = _stored_digests(signed)
    resigned = tmp_path / "b.pkg"
    resign(signed, resigned, signer_b)
    assert _stored_digests(resigned) == before
    check_signed_layout(resigned, signer_b, tmp_path)
    assert bsdtar_extract(resigned, tmp_path / "xb") == expected
    unsigned = tmp_path / "c.pkg"
    resign(resigned, unsigned, None)
    assert _stored_digests(unsigned) == before
    _, _, xml = raw_toc(unsigned)
    assert b"signature" not in xml
    assert min(off for off, _ in data_offsets(xml).values()) == 20
    assert bsdtar_extract(unsigned, tmp_path / "xc") == expected
    with XarReader(unsigned) as reader:
        assert reader.signature is None and reader.x_signature is None


def test_resign_real_fixtures(tmp_path: Path, signer_a):
    # strip Apple's signature (and the stapled ticket it invalidates); data stays identical
    stripped = tmp_path / "stripped.pkg"
    resign(SIGNED, stripped, None)
    assert _stored_digests(stripped) == _stored_digests(SIGNED)
    assert bsdtar_extract(stripped, tmp_path / "s") == bsdtar_extract(SIGNED, tmp_path / "o")
    # sign an unsigned productbuild archive
    signed = tmp_path / "relic-signed.pkg"
    resign(RELIC, signed, signer_a)
    assert _stored_digests(signed) == _stored_digests(RELIC)
    check_signed_layout(signed, signer_a, tmp_path)
    assert bsdtar_extract(signed, tmp_path / "r") == bsdtar_extract(RELIC, tmp_path / "r0")


# ----------------------------------------------------------------------------------------------
# Damage


def test_toc_flip_is_a_checksum_error(tmp_path: Path):
    for fixture in FIXTURE_PKGS:
        data = bytearray(fixture.read_bytes())
        lc = struct.unpack(">Q", data[8:16])[0]
        for pos in (28 + 3, 28 + lc // 2, 28 + lc - 1, 28 + lc + 5):  # TOC start/middle/end, stored checksum
            damaged = tmp_path / f"toc-{fixture.name}"
            bad = bytearray(data)
            bad[pos] ^= 0x20
            damaged.write_bytes(bad)
            with pytest.raises(ChecksumError, match="TOC"):
                XarReader(damaged)
            assert run("bsdtar", "-tf", damaged, check=False).returncode != 0


@pytest.mark.parametrize("member", ["com.sas.dummy.pkg/Payload", "com.sas.dummy.pkg/Bom", "Distribution"])
def test_heap_flip_names_the_member(tmp_path: Path, member: str):
    require_tool("bsdtar")
    data = bytearray(RELIC.read_bytes())
    _, _, xml = raw_toc(RELIC)
    off, length = data_offsets(xml)[member]
    heap = 28 + struct.unpack(">Q", data[8:16])[0]
    data[heap + off + length // 3] ^= 0x04
    damaged = tmp_path / "damaged.pkg"
    damaged.write_bytes(data)
    with XarReader(damaged) as reader:  # opening reads only the TOC: still fine
        for e in reader.entries:
            if e.type == "file" and e.path != member:
                reader.read(e)
        with pytest.raises(ChecksumError, match=member):
            reader.read(member)
        with pytest.raises(ChecksumError, match=member):
            for _ in reader.iter_stored(member):
                pass
    res = run("bsdtar", "-xf", damaged, "-C", tmp_path, check=False)
    assert res.returncode != 0


@pytest.mark.parametrize("fixture", FIXTURE_PKGS, ids=lambda p: p.name)
def test_truncations_raise_only_project_errors(fixture: Path):
    data = fixture.read_bytes()
    with XarReader(fixture) as reader:
        end = reader.heap_offset + reader.heap_data_end()
    cuts = sorted(set(range(0, len(data), max(1, len(data) // 150))) | {0, 3, 27, 28, 29, end - 1})
    for cut in cuts:
        if cut >= end:
            continue
        with pytest.raises(FormatError):
            read_everything(io.BytesIO(data[:cut]))


@pytest.mark.parametrize("fixture", FIXTURE_PKGS, ids=lambda p: p.name)
@FUZZ
@given(st.data())
def test_random_mutations_raise_only_project_errors(fixture: Path, data):
    raw = bytearray(fixture.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[pos:pos + data.draw(st.integers(1, 64))]
    only_fleetpkg_errors(bytes(raw))


@pytest.mark.parametrize("fixture", FIXTURE_PKGS, ids=lambda p: p.name)
@FUZZ
@given(st.data())
def test_mutated_toc_with_valid_checksum(fixture: Path, data):
    """Damage the TOC XML itself and re-seal it, so the parser (not the checksum) is exercised."""
    header, comp, xml = raw_toc(fixture)
    tail = fixture.read_bytes()[28 + header[3] + 20:]
    text = bytearray(xml)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text) - 1))
        choice = data.draw(st.sampled_from(["digit", "byte", "cut", "dup"]))
        if choice == "digit":
            text[pos:pos + 1] = data.draw(st.sampled_from([b"9", b"0", b"99999999999", b"-", b"/", b".."]))
        elif choice == "byte":
            text[pos] = data.draw(st.integers(0, 255))
        elif choice == "cut":
            del text[pos:pos + data.draw(st.integers(1, 40))]
        else:
            text[pos:pos] = text[pos:pos + data.draw(st.integers(1, 200))]
    only_fleetpkg_errors(make_xar(bytes(text), tail))


# ----------------------------------------------------------------------------------------------
# Hand-built archives: tolerance, encodings, hostile input


def _tolerant_archive(apple_quirks: bool) -> tuple[bytes, dict[str, bytes]]:
    """Uppercase styles, ids and offsets out of order, a base64 name, trailing bytes; with
    apple_quirks also a repeated <name> (last wins, as apple-xar) and unknown/<ea> elements."""
    payload = b"payload bytes\n" * 10
    info = b"<pkg-info/>"
    info_z = zlib.compress(info)
    extra = "<ea id='0'><name>x</name></ea><FinderCreateTime/>" if apple_quirks else "<unknown-tag/>"
    info_xml = file_xml(2, "PackageInfo", info, offset=20 + len(payload), encoding="application/x-gzip",
                        stored=info_z, style="SHA1", extra=extra)
    if apple_quirks:
        info_xml = info_xml.replace("<name>PackageInfo</name>", "<name>Old</name><name>PackageInfo</name>")
    files = (info_xml + file_xml(1, "Payload", payload, offset=20)
             + file_xml(3, "d2VpcmQ=", b"w", offset=20 + len(payload) + len(info_z), name_attr=B64))
    blob = make_xar(toc_doc(files, style="SHA1"), payload + info_z + b"w" + b"t8lr trailing ticket")
    return blob, {"PackageInfo": info, "Payload": payload, "weird": b"w"}


@pytest.mark.parametrize("apple_quirks", [False, True])
def test_tolerant_reading(tmp_path: Path, apple_quirks: bool):
    blob, expected = _tolerant_archive(apple_quirks)
    path = tmp_path / "t.xar"
    path.write_bytes(blob)
    with XarReader(path) as reader:
        assert [e.path for e in reader.entries] == ["PackageInfo", "Payload", "weird"]
        assert {e.path: reader.read(e) for e in reader.entries} == expected
    if not apple_quirks:  # libarchive joins repeated <name>s and fails on bare <ea>: compare the rest
        assert bsdtar_extract(path, tmp_path / "x") == expected


@pytest.mark.parametrize("encoding,compress", [
    ("application/x-bzip2", bz2.compress),
    ("application/x-xz", lzma.compress),
    ("application/x-lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)),
    ("application/x-gzip", zlib.compress),
    ("application/octet-stream", bytes),
])
def test_encodings_decode_like_bsdtar(tmp_path: Path, encoding, compress):
    content = os.urandom(50_000) + b"A" * 3_000_000
    stored = compress(content)
    path = tmp_path / "enc.xar"
    path.write_bytes(make_xar(toc_doc(file_xml(1, "member", content, offset=20, encoding=encoding,
                                               stored=stored)), stored))
    with XarReader(path) as reader:
        chunks = list(reader.iter_data("member", chunk_size=1 << 16))
        assert max(len(c) for c in chunks) <= 1 << 16
        assert b"".join(chunks) == content
    assert bsdtar_extract(path, tmp_path / "x") == {"member": content}


@FUZZ
@given(encoding=st.sampled_from(["application/x-gzip", "application/x-bzip2", "application/x-xz",
                                 "application/x-lzma", "application/octet-stream"]),
       content=st.binary(max_size=300), damage=st.binary(max_size=40), size_delta=st.integers(-5, 5))
def test_hostile_member_data_with_valid_checksums(encoding, content, damage, size_delta):
    """Garbage that passes the archived checksum must still fail cleanly in the decoders."""
    compress = {"application/x-gzip": zlib.compress, "application/x-bzip2": bz2.compress,
                "application/x-xz": lzma.compress, "application/octet-stream": bytes,
                "application/x-lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)}[encoding]
    good = compress(content)
    stored = good[:len(good) // 2] + damage if damage else good
    xml = toc_doc(file_xml(1, "m", content, offset=20, encoding=encoding, stored=stored))
    declared = max(0, len(content) + size_delta)
    xml = xml.replace(f"<size>{len(content)}</size>", f"<size>{declared}</size>")
    try:
        with XarReader(io.BytesIO(make_xar(xml, stored))) as reader:
            got = reader.read("m")
    except FleetpkgError:
        return
    assert got == content and declared == len(content)  # success only for the true bytes


def test_archived_checksum_covers_bytes_the_decoder_ignores():
    """Damage after the end of a zlib stream still decodes fine: only the archived checksum sees it."""
    content = b"hello " * 100
    stored = zlib.compress(content) + b"\0\0"
    xml = toc_doc(file_xml(1, "m", content, offset=20, encoding="application/x-gzip", stored=stored))
    with XarReader(io.BytesIO(make_xar(xml, stored))) as reader:
        assert reader.read("m") == content
    with XarReader(io.BytesIO(make_xar(xml, stored[:-1] + b"\1"))) as reader:
        with pytest.raises(ChecksumError, match="archived"):
            reader.read("m")


def test_unseekable_input_is_refused():
    read_end, write_end = os.pipe()
    os.write(write_end, RELIC.read_bytes()[:1000])
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        with pytest.raises(FormatError, match="seekable"):
            XarReader(pipe)


def test_unknown_encoding_is_unsupported(tmp_path: Path):
    blob = make_xar(toc_doc(file_xml(1, "m", b"abc", offset=20, encoding="application/zstd")), b"abc")
    with XarReader(io.BytesIO(blob)) as reader:
        with pytest.raises(UnsupportedError, match="m"):
            reader.read("m")


def test_decompression_bomb_is_bounded():
    content = bytes(64 << 20)
    stored = zlib.compress(content, 9)
    xml = toc_doc(file_xml(1, "bomb", content, offset=20, encoding="application/x-gzip", stored=stored))
    xml = xml.replace(f"<size>{len(content)}</size>", "<size>1000</size>")
    with XarReader(io.BytesIO(make_xar(xml, stored))) as reader:
        with pytest.raises(ChecksumError, match="bomb"):
            reader.read("bomb")


@pytest.mark.parametrize("name,attr", [
    ("..", ""), (".", ""), ("a/b", ""), ("/abs", ""), ("../x", ""), ("", ""),
    (base64.b64encode(b"a\x00b").decode(), B64), (base64.b64encode(b"../x").decode(), B64),
    (base64.b64encode(b"..").decode(), B64), ("!!notbase64", B64),
])
def test_unsafe_names_refused(name: str, attr: str):
    xml = toc_doc(file_xml(1, name, b"x", offset=20, name_attr=attr))
    with pytest.raises(FormatError):
        XarReader(io.BytesIO(make_xar(xml, b"x")))


def test_unsafe_nested_name_names_the_member():
    inner = file_xml(2, "..", b"x", offset=20)
    xml = toc_doc(f'<file id="1"><type>directory</type><name>Resources</name>{inner}</file>')
    with pytest.raises(FormatError, match="Resources/.."):
        XarReader(io.BytesIO(make_xar(xml, b"x")))


def test_header_and_toc_bounds(tmp_path: Path):
    good = make_xar(toc_doc(file_xml(1, "m", b"abc", offset=20)), b"abc")
    cases = {
        "magic": b"xaR!" + good[4:],
        "small header": good[:4] + struct.pack(">H", 20) + good[6:],
        "huge toc": good[:8] + struct.pack(">QQ", 1 << 40, 1 << 41) + good[24:],
        "wrong inflated size": good[:16] + struct.pack(">Q", 5) + good[24:],
        "version": good[:6] + struct.pack(">H", 7) + good[8:],
        "algorithm": good[:24] + struct.pack(">I", 9) + good[28:],
        "no checksum": good[:24] + struct.pack(">I", 0) + good[28:],
        "style mismatch": make_xar(toc_doc(file_xml(1, "m", b"abc", offset=20), style="md5",
                                           size=16), b"abc"),
        "doctype": make_xar('<!DOCTYPE x [<!ENTITY a "aaaa">]><xar><toc>&a;</toc></xar>', b""),
        "two tocs": make_xar("<xar><toc/><toc/></xar>", b""),
        "deep": make_xar("<xar><toc>" + '<file id="1"><name>d</name>' * 100 + "</file>" * 100
                         + "</toc></xar>", b""),
        "data past eof": make_xar(toc_doc(file_xml(1, "m", b"abc", offset=20)), b"ab"),
        "bad number": make_xar(toc_doc(file_xml(1, "m", b"abc", offset=20).replace(
            "<offset>20</offset>", "<offset>2" + "0" * 5000 + "</offset>")), b"abc"),
    }
    for what, blob in cases.items():
        with pytest.raises(FormatError):
            read_everything(io.BytesIO(blob))


def test_other_checksum_algorithms_and_header_sizes():
    files = file_xml(1, "m", b"abc", offset=0)
    for alg, style, size in ((2, "md5", 16), (3, "sha256", 32), (4, "sha512", 64)):
        xml = toc_doc(files.replace("<offset>0</offset>", f"<offset>{size}</offset>"), style=style, size=size)
        with XarReader(io.BytesIO(make_xar(xml, b"abc", alg=alg))) as reader:
            assert reader.checksum_alg == style and reader.read("m") == b"abc"
    # a longer header is skipped (7-Zip and Apple accept it); mackyle's named-algorithm variant too
    xml = toc_doc(files.replace("<offset>0</offset>", "<offset>20</offset>"))
    with XarReader(io.BytesIO(make_xar(xml, b"abc", hsize=64))) as reader:
        assert reader.header_size == 64 and reader.read("m") == b"abc"
    xml = toc_doc(files.replace("<offset>0</offset>", "<offset>32</offset>"), style="sha256", size=32)
    with XarReader(io.BytesIO(make_xar(xml, b"abc", alg=3, hsize=36, extra_header=b"sha256"))) as reader:
        assert reader.checksum_alg == "sha256"


def test_small_compressed_members_are_the_bytes_the_streamed_path_writes(tmp_path):
    """add_bytes reuses one zlib stream per distinct small member (every identity package of a
    build has the same Bom); the archive must be the one add_chunks writes, member by member."""
    import random

    rng = random.Random(5)
    members = {"Bom": bytes(13294), "PackageInfo": b"<pkg-info/>\n" * 40,
               "noise": bytes(rng.randrange(256) for _ in range(70_000)), "empty": b""}
    outs = []
    for how in ("bytes", "chunks", "bytes"):  # the second add_bytes run hits the cache
        out = tmp_path / f"{how}-{len(outs)}.xar"
        with XarWriter(out, creation_time=1_700_000_000) as w:
            for name, data in members.items():
                if how == "bytes":
                    w.add_bytes(name, data, compress=True)
                else:
                    w.add_chunks(name, [data[i:i + 4096] for i in range(0, len(data), 4096)], compress=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    with XarReader(tmp_path / "bytes-0.xar") as r:
        assert {name: r.read(name) for name in members} == members


_NAME_PART = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                     min_size=1, max_size=12).filter(lambda p: p not in (".", ".."))
# owner names as XML can carry them, not empty (`<user></user>` parses back as `<user/>`)
_OWNER = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn"),
                                                    whitelist_characters="\t\n\r&<>\"'"),
                                      min_size=1, max_size=8))


@FUZZ
@given(members=st.lists(st.tuples(st.lists(_NAME_PART, min_size=1, max_size=3), st.binary(max_size=300),
                                  st.booleans(), st.integers(0, 0o7777), st.integers(0, 70000), _OWNER),
                        max_size=6, unique_by=lambda m: tuple(m[0])),
       dirs=st.lists(st.tuples(_NAME_PART, st.integers(0, 0o7777), _OWNER), max_size=2,
                     unique_by=lambda d: d[0]),
       signed=st.booleans(), alg=st.sampled_from(["sha1", "sha256"]))
def test_toc_is_what_the_generic_tree_path_writes(members, dirs, signed, alg, signer_a):
    """The writer emits its TOC as text; it must be the fixed point of the generic path
    (ElementTree parse, ET.indent(space=" "), toc_bytes) that resign writes and the writer
    used to build: same escaping, base64 names, self-closing tags, indentation, signatures."""
    import xml.etree.ElementTree as ET

    from builder.formats.pkg.xar.toc import toc_bytes

    with XarWriter(None, in_memory=True, creation_time=1_700_000_000, checksum_alg=alg,
                   signer=signer_a if signed else None) as w:
        for name, mode, owner in dirs:
            w.add_directory(name, mode=mode, uid=7, gid=0, user=owner, group=owner)
        for parts, data, compress, mode, uid, owner in members:
            path = "/".join(parts)
            try:
                w.add_bytes(path, data, compress=compress, mode=mode, uid=uid, gid=uid, user=owner, group=owner)
            except BuildError:  # a file used as a directory: refused, as it must be
                continue
    header = struct.unpack(">4sHHQQI", w.data[:28])
    xml = zlib.decompress(w.data[header[1]:header[1] + header[3]])
    root = ET.fromstring(xml)
    ET.indent(root, space=" ")
    assert toc_bytes(root) == xml
    with XarReader(io.BytesIO(w.data)) as reader:  # and it reads back, every checksum verified
        for entry in reader.entries:
            if entry.type == "file":
                reader.read(entry)
