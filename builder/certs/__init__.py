"""Device client certificates: read .pfx and CA files, lint against the vendor's rules, build
chains, and re-encode identities in the PKCS#12 form macOS imports."""

from __future__ import annotations

from ..errors import CertificateError
from .cafile import load_ca_files
from .chain import build_chain, is_self_signed, verify_path
from .model import ERROR, WARNING, Finding, Identity, Rule
from .pfx import load_pfx, parse_pfx
from .reencode import ReencodedIdentity, reencode_for_macos
from .rules import RULES, lint_identity

__all__ = [
    "CertificateError", "ERROR", "WARNING", "Finding", "Identity", "ReencodedIdentity", "Rule",
    "RULES", "build_chain", "is_self_signed", "lint_identity", "load_ca_files", "load_pfx",
    "parse_pfx", "reencode_for_macos", "verify_path",
]
