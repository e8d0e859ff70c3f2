"""resign(): sign, re-sign or unsign a xar by writing a new TOC and signature space in front of
its file data, which is copied through unchanged."""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET

from ....errors import BuildError, FormatError, UnsupportedError
from .model import ALGORITHM_IDS, CHUNK, Signer
from .output import Output, copy_range, write_all
from .prefix import assemble_prefix, check_signer
from .reader import XarReader
from .toc import (child_named, children_named, local_name, parse_number, signature_element, sub_element,
                  toc_bytes)


def resign(src: str | os.PathLike, dest: str | os.PathLike, signer: Signer | None, *,
           verify_data: bool = False) -> None:
    """Rewrite only the TOC (new signature space, shifted data offsets); file data is copied
    through unchanged, so re-signing costs one sequential copy. The signature covers the TOC,
    which holds every member's checksum, so signing cannot make damaged data pass: readers still
    reject it. verify_data=True reads and checks every member first (one more pass) to refuse
    damaged input outright. signer=None strips the signatures. A stapled notarization trailer
    is dropped: the new TOC checksum invalidates it anyway (§2.6)."""
    sizes = check_signer(signer)[:2] if signer is not None else (0, 0)
    with XarReader(src) as reader:
        alg = reader.checksum_alg
        if alg not in ALGORITHM_IDS:
            raise UnsupportedError(f"cannot re-sign an archive using {alg!r} TOC checksums", where=reader.name)
        digest_size = hashlib.new(alg).digest_size
        old_base = reader.checksum_offset + reader.checksum_size
        for sig in (reader.signature, reader.x_signature):
            if sig is not None:
                old_base = max(old_base, reader.signature_base - reader.heap_offset + sig.offset + sig.size)
        data_end = max(reader.heap_data_end(), old_base)
        for entry in reader.entries:
            if entry.data is not None and entry.data.length and entry.data.offset < old_base:
                raise FormatError("member data overlaps the checksum/signature area",
                                  where=reader._where(entry.path))
            if verify_data and entry.data is not None:
                for _ in reader.iter_stored(entry):  # refuse to sign damaged data
                    pass
        for off, length in reader._extra_ranges:
            if length and off < old_base:
                raise FormatError("extended attribute data overlaps the signature area", where=reader.name)
        new_base = digest_size + sum(sizes)
        root = ET.fromstring(reader.toc_xml)  # already validated and bounded by XarReader
        toc = children_named(root, "toc")[0]
        _rewrite_toc(toc, alg, digest_size, signer, sizes, new_base - old_base)
        prefix = assemble_prefix(toc_bytes(root), alg, signer, sizes)
        out = Output(dest)
        try:
            write_all(out.fd, prefix)
            _copy_from_reader(reader, reader.heap_offset + old_base, data_end - old_base, out.fd)
            out.commit()
            out = None
        except OSError as exc:
            raise BuildError(f"cannot write: {exc.strerror or exc}", where=str(dest)) from None
        finally:
            if out is not None:
                out.abort()


def _rewrite_toc(toc: ET.Element, alg: str, digest_size: int, signer: Signer | None,
                 sizes: tuple[int, int], delta: int) -> None:
    for el in list(toc):
        if isinstance(el.tag, str) and local_name(el.tag) in ("signature", "x-signature"):
            toc.remove(el)
    cks = child_named(toc, "checksum")
    if cks is None:
        cks = ET.Element("checksum")
        toc.insert(0, cks)
    cks.attrib.clear()
    cks.set("style", alg)
    for child in list(cks):
        cks.remove(child)
    cks.text = "\n" + "   "
    sub_element(cks, "offset", "0").tail = "\n   "
    sub_element(cks, "size", str(digest_size)).tail = "\n  "
    if cks.tail is None or not cks.tail.strip() == "":
        cks.tail = "\n  "
    if signer is not None:
        rsa_size, cms_size = sizes
        certs = [bytes(c) for c in signer.certificates]
        new = [signature_element("signature", "RSA", digest_size, rsa_size, certs)]
        if cms_size:
            new.append(signature_element("x-signature", "CMS", digest_size + rsa_size, cms_size, certs))
        at = list(toc).index(cks) + 1
        for el in new:
            ET.indent(el, space=" ", level=2)
            el.tail = cks.tail
            toc.insert(at, el)
            at += 1
    if delta:
        for parent in toc.iter():
            if isinstance(parent.tag, str) and local_name(parent.tag) in ("data", "ea"):
                for off in children_named(parent, "offset"):
                    value = parse_number((off.text or "").strip(), "data offset", "TOC") + delta
                    if value < 0:
                        raise FormatError("data offset lies inside the signature area", where="TOC")
                    off.text = str(value)


def _copy_from_reader(reader: XarReader, offset: int, length: int, dst_fd: int) -> None:
    if reader._fd is not None:
        copy_range(reader._fd, dst_fd, offset, length)
        return
    while length > 0:
        chunk = reader._read_exact(offset, min(CHUNK, length), "heap data")
        write_all(dst_fd, chunk)
        offset += len(chunk)
        length -= len(chunk)
