"""CA files in the forms admins export them; bad files give one error naming the file."""

from __future__ import annotations

import subprocess

import pytest

from builder.certs import CertificateError, load_ca_files
from tests.certs import factory
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def cas():
    root = factory.make_ca()
    return root.certificate, factory.make_intermediate(root).certificate


def test_pem_bundle_der_and_duplicates(tmp_path, cas):
    root, issuing = cas
    bundle = factory.write_pem(tmp_path / "bundle.pem", issuing, root)
    der = factory.write_der(tmp_path / "root.cer", root)
    assert load_ca_files([bundle, der]) == [issuing, root]
    assert load_ca_files([der]) == [root]


def test_p7b_from_openssl(tmp_path, cas):
    openssl = require_tool("openssl")
    bundle = factory.write_pem(tmp_path / "bundle.pem", *cas)
    for form in ("DER", "PEM"):
        out = tmp_path / f"chain-{form}.p7b"
        subprocess.run([openssl, "crl2pkcs7", "-nocrl", "-certfile", str(bundle), "-outform", form,
                        "-out", str(out)], check=True, capture_output=True)
        assert sorted(c.serial_number for c in load_ca_files([out])) == sorted(c.serial_number for c in cas)


@pytest.mark.parametrize("content,needle", [
    (b"not a certificate", "not a certificate file"),
    (b"", "not a certificate file"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds no certificate"),
])
def test_bad_files(tmp_path, content, needle):
    path = tmp_path / "bad.cer"
    path.write_bytes(content)
    with pytest.raises(CertificateError) as info:
        load_ca_files([path])
    assert info.value.where == str(path) and needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CertificateError, match="cannot read"):
        load_ca_files([tmp_path / "absent.pem"])
