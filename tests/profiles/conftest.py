"""Test PKI for the profile tests: root, issuing CA, device identities, profile signer.

Everything is made with `cryptography` via tests/certs/factory.py (no fleetpkg code), so the
certificates and PKCS#12 files are independent inputs.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass

import pytest

from tests.certs import factory

# openssl checks validity against the real clock, so the signer must be valid today.
TODAY = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Pki:
    root: factory.Issued
    other_root: factory.Issued
    issuing: factory.Issued
    device: factory.Issued
    signer: factory.Issued


def random_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(24))


def macos_p12(identity: factory.Issued, password: str, chain=()) -> bytes:
    """A PKCS#12 as macOS imports it: 3DES bags, SHA-1 MAC, 2048 rounds, fresh salts each call."""
    return factory.make_pfx(identity.certificate, identity.key, password.encode(), list(chain),
                            encryption="3des")


@pytest.fixture(scope="session")
def pki() -> Pki:
    root = factory.make_ca("Profiles Test Root CA", not_after=TODAY + dt.timedelta(days=3650))
    other_root = factory.make_ca("Profiles Other Root CA", key_index=12)
    issuing = factory.make_intermediate(root, "Profiles Test Issuing CA",
                                        not_after=TODAY + dt.timedelta(days=1000))
    device = factory.make_device_cert(issuing, "MAC-01", not_after=TODAY + dt.timedelta(days=365))
    signer = factory.make_device_cert(issuing, "Profile Signer", key_index=1, eku=None,
                                      san_dns=None, key_usage={"digital_signature": True},
                                      not_before=TODAY - dt.timedelta(days=1),
                                      not_after=TODAY + dt.timedelta(days=365))
    return Pki(root, other_root, issuing, device, signer)


@pytest.fixture
def device_args(pki: Pki) -> dict:
    """Keyword arguments for device_profile with a fresh p12 and password."""
    password = random_password()
    return dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE",
                hostname="MAC-01", p12=macos_p12(pki.device, password, [pki.issuing.certificate]),
                p12_password=password, roots=[pki.root.certificate],
                intermediates=[pki.issuing.certificate])
