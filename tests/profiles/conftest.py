"""Test PKI for the profile tests: root, issuing CA, device identities, profile signer.

Certificates are made with `cryptography` via tests/certs/factory.py (no fleetpkg code). The
embedded PKCS#12 comes from builder.certs.reencode_for_macos, as in a real build: the profile
tests check that what the build embeds opens with openssl and the profile's password.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from builder.certs import Identity, reencode_for_macos
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


def macos_identity(identity: factory.Issued, chain=()) -> tuple[bytes, str]:
    """(p12, password) as the build makes them: builder.certs.reencode_for_macos, which writes
    3DES bags + SHA-1 MAC with fresh salts and a fresh random password on every call."""
    out = reencode_for_macos(Identity(identity.certificate, identity.key, ()), chain=list(chain))
    return out.p12, out.password


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
    p12, password = macos_identity(pki.device, [pki.issuing.certificate])
    return dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE",
                hostname="MAC-01", p12=p12, p12_password=password, roots=[pki.root.certificate],
                intermediates=[pki.issuing.certificate])
