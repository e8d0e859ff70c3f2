"""Read a signed xar's TOC checksum, signature slots and KeyInfo chain straight from its bytes.

Deliberately independent of builder.formats.pkg.xar, so signature tests do not check the code with itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import zlib
from pathlib import Path


def signature_parts(path: Path) -> dict:
    data = Path(path).read_bytes()
    magic, hsize, version, lc, lu, alg = struct.unpack(">4sHHQQI", data[:28])
    assert (magic, hsize, version, alg) == (b"xar!", 28, 1, 1)
    toc_z = data[28:28 + lc]
    toc = zlib.decompress(toc_z).decode()
    assert len(toc.encode()) == lu
    heap = 28 + lc

    def slot(element: str) -> tuple[int, int]:
        m = re.search(rf'<{element} style="\w+">\s*<offset>(\d+)</offset>\s*<size>(\d+)</size>', toc)
        assert m, element
        return int(m.group(1)), int(m.group(2))

    def certs(element: str) -> list[bytes]:
        block = toc[toc.index(f"<{element} "):toc.index(f"</{element}>")]
        return [base64.b64decode(re.sub(r"\s", "", c))
                for c in re.findall(r"<X509Certificate>(.*?)</X509Certificate>", block, re.S)]

    rsa_off, rsa_size = slot("signature")
    cms_off, cms_size = slot("x-signature")
    offsets = [int(o) for o in re.findall(r"<data>.*?<offset>(\d+)</offset>", toc, re.S)]
    return {
        "toc": toc, "toc_compressed": toc_z, "heap": heap,
        "checksum": data[heap:heap + 20], "computed_checksum": hashlib.sha1(toc_z).digest(),
        "rsa_slot": (rsa_off, rsa_size), "cms_slot": (cms_off, cms_size),
        "rsa": data[heap + rsa_off:heap + rsa_off + rsa_size],
        "cms": data[heap + cms_off:heap + cms_off + cms_size],
        "toc_certs": certs("signature"), "cms_toc_certs": certs("x-signature"),
        "first_data_offset": min(offsets) if offsets else None,
    }
