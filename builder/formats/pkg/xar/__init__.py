"""xar container: the outer layer of every flat package (spec: flat-package-format.md §1, §2).

Reading verifies the TOC checksum on open and each member's checksums when it is read, streaming
the heap in chunks, because Installer rejects damage only on the Mac, far from where it happened.
Writing spools member data to a temp file, then emits header, TOC, checksum, signature space and
the data in sorted document order, so the same inputs give the same bytes. Any malformed input
raises a FleetpkgError subclass, never a bare library exception.

One job per module:
- model.py      header layout, checksum algorithms, data encodings, parsed TOC records, Signer
- toc.py        the TOC's XML: element lookups and numbers when reading, builders and serialiser
- decoding.py   streaming decoders of the member data encodings (gzip, bzip2, lzma, xz)
- reader.py     XarReader: opens, bounds-checks and verifies an archive; streams members
- prefix.py     everything before the file data: header, zlib TOC, checksum, signatures
- output.py     the atomic output file and byte copying (kernel copy where possible)
- writer.py     XarWriter: builds an archive, deterministic order
- resigning.py  resign(): a new TOC and signatures around the unchanged file data
"""

from .model import Signer, XarData, XarEntry, XarSignature
from .reader import XarReader
from .resigning import resign
from .writer import XarWriter

__all__ = ["Signer", "XarData", "XarEntry", "XarReader", "XarSignature", "XarWriter", "resign"]
