"""Mach-O reader against real binaries (fixtures/README.md facts) and damaged copies of them."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import FormatError
from builder.formats.macho import is_macho, read_macho
from tests.conftest import FIXTURES

MACHO = FIXTURES / "macho"

# architectures as stated in fixtures/README.md (checked there with independent tools)
EXPECTED_ARCHS = {
    "fq-darwin_amd64_a_dynamic": ("x86_64",),
    "fq-darwin_aarch64_a_dynamic": ("arm64",),
    "fq-darwin_fat_a_dynamic": ("x86_64", "arm64"),
    "relic-slimfile-dummyapp": ("arm64",),
    "rubymacho-x86_64_hello_unk_lc.bin": ("x86_64",),
}


def test_every_fixture_is_covered():
    names = {p.name for p in MACHO.iterdir()}
    assert names == set(EXPECTED_ARCHS) | {"rubymacho-yaml2obj_truncated-load-commands.macho"}


@pytest.mark.parametrize("name", sorted(EXPECTED_ARCHS))
def test_architectures(name):
    path = MACHO / name
    assert is_macho(path.read_bytes()[:8])
    assert read_macho(path).architectures == EXPECTED_ARCHS[name]


def _cpu_types_from_headers(data: bytes) -> list[int]:
    """Independent decoding of the raw headers, for cross-checking slice order in the fat file."""
    magic = struct.unpack(">I", data[:4])[0]
    assert magic == 0xCAFEBABE
    n = struct.unpack(">I", data[4:8])[0]
    return [struct.unpack(">i", data[8 + 20 * i: 12 + 20 * i])[0] for i in range(n)]


def test_fat_slice_order_follows_the_fat_header():
    data = (MACHO / "fq-darwin_fat_a_dynamic").read_bytes()
    assert _cpu_types_from_headers(data) == [0x01000007, 0x0100000C]


def test_adhoc_signature_has_identifier_but_no_team():
    path = MACHO / "fq-darwin_aarch64_a_dynamic"
    info = read_macho(path)
    assert info.identifier == "a_dynamic"
    assert info.team_id is None
    # the identifier really is a NUL-terminated string inside the signature blob (last 534 bytes)
    assert b"a_dynamic\0" in path.read_bytes()[-534:]


def test_fat_file_reports_signature_of_its_signed_slice():
    info = read_macho(MACHO / "fq-darwin_fat_a_dynamic")
    assert (info.identifier, info.team_id) == ("a_dynamic", None)


def test_unsigned_binary_has_no_identity():
    info = read_macho(MACHO / "fq-darwin_amd64_a_dynamic")
    assert (info.identifier, info.team_id) == (None, None)


def _code_directory_offset(data: bytes) -> int:
    """Locate the CodeDirectory by hand: SuperBlob magic, then its first index slot."""
    sb = data.rindex(struct.pack(">I", 0xFADE0CC0))
    count = struct.unpack(">I", data[sb + 8: sb + 12])[0]
    for i in range(count):
        slot, off = struct.unpack(">II", data[sb + 12 + 8 * i: sb + 20 + 8 * i])
        if slot == 0:
            return sb + off
    raise AssertionError("no CodeDirectory")


def test_team_id_read_from_code_directory(tmp_path):
    """Patch a real CodeDirectory (version 0x20400) so teamOffset points at a string we write."""
    data = bytearray((MACHO / "fq-darwin_aarch64_a_dynamic").read_bytes())
    cd = _code_directory_offset(bytes(data))
    assert struct.unpack(">I", data[cd: cd + 4])[0] == 0xFADE0C02
    assert struct.unpack(">I", data[cd + 8: cd + 12])[0] >= 0x20200
    hash_offset = struct.unpack(">I", data[cd + 16: cd + 20])[0]
    data[cd + hash_offset: cd + hash_offset + 11] = b"ABCDE12345\0"  # overwrite the first page hash
    data[cd + 48: cd + 52] = struct.pack(">I", hash_offset)
    path = tmp_path / "patched"
    path.write_bytes(bytes(data))
    info = read_macho(path)
    assert (info.identifier, info.team_id) == ("a_dynamic", "ABCDE12345")


def test_old_code_directory_version_ignores_team_offset(tmp_path):
    data = bytearray((MACHO / "fq-darwin_aarch64_a_dynamic").read_bytes())
    cd = _code_directory_offset(bytes(data))
    data[cd + 8: cd + 12] = struct.pack(">I", 0x20100)
    data[cd + 48: cd + 52] = struct.pack(">I", 0x58)  # would point at the identifier
    path = tmp_path / "old"
    path.write_bytes(bytes(data))
    assert read_macho(path).team_id is None


def test_truncated_load_commands_is_a_clean_error():
    with pytest.raises(FormatError) as exc:
        read_macho(MACHO / "rubymacho-yaml2obj_truncated-load-commands.macho")
    text = str(exc.value)
    assert "\n" not in text and "rubymacho-yaml2obj_truncated-load-commands.macho" in text
    assert "load command" in text


@pytest.mark.parametrize("head,expected", [
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x34", False),  # Java class file (major version 52)
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", True),
    (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", True),
    (b"xar!\x00\x1c\x00\x01", False),
    (b"\xfe\xed", False),
])
def test_is_macho(head, expected):
    assert is_macho(head) is expected


def test_not_macho_is_format_error(tmp_path):
    for content in (b"", b"xar!", b"\xca\xfe\xba\xbe" + b"\0" * 4, b"\xca\xfe\xba\xbe\0\0\0\x02"):
        path = tmp_path / "x"
        path.write_bytes(content)
        with pytest.raises(FormatError):
            read_macho(path)


SAMPLES = {name: (MACHO / name).read_bytes() for name in
           ("fq-darwin_fat_a_dynamic", "fq-darwin_aarch64_a_dynamic", "rubymacho-x86_64_hello_unk_lc.bin")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SAMPLES)), cut=st.integers(min_value=0, max_value=200_000),
       flips=st.lists(st.tuples(st.integers(min_value=-600, max_value=4096), st.integers(1, 255)), max_size=8))
def test_damage_only_raises_format_error(tmp_path, name, cut, flips):
    """Damage aimed at headers, load commands, fat table (first 4 KiB) and signature (last 600 B)."""
    data = bytearray(SAMPLES[name][:cut])
    for pos, xor in flips:
        if -len(data) <= pos < len(data):
            data[pos] ^= xor
    path = tmp_path / "damaged"
    path.write_bytes(bytes(data))
    try:
        info = read_macho(path)
    except FormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(a, str) for a in info.architectures)
