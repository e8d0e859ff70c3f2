"""Profile and payload values, and their plist dictionaries.

Plain frozen dataclasses: the builders decide what goes in a profile, this module only knows how
Apple spells it (schemas in tests/schemas/device-management/mdm/profiles/). Each payload offers a
`uuid_view`, the non-secret content its PayloadUUID is derived from (see uuids.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ..certs.memo import by_object
from .uuids import payload_uuid

PKCS12 = "com.apple.security.pkcs12"
ROOT = "com.apple.security.root"
PKCS1 = "com.apple.security.pkcs1"
SERVICE_MANAGEMENT = "com.apple.servicemanagement"
RULE_TYPES = ("BundleIdentifier", "BundleIdentifierPrefix", "Label", "LabelPrefix", "TeamIdentifier")
TARGET_MAC = 5


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> str:
    """The subject CN, or the whole RFC 4514 subject when there is none (display text only)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str) and names[0].value.strip():
        return names[0].value.strip()
    return cert.subject.rfc4514_string() or fingerprint(cert)[:16]


@by_object(maxsize=256)
def ca_facts(cert: x509.Certificate) -> tuple[str, str, str, bytes]:
    """(fingerprint, common name, .cer file name, DER) of a CA certificate, worked out once per
    certificate object: every device profile of a fleet carries the same CA certificates."""
    name = common_name(cert)
    return (fingerprint(cert), name, f"{_file_label(name)}.cer",
            cert.public_bytes(serialization.Encoding.DER))


def _file_label(text: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return label or "certificate"


def _common(payload_type: str, identifier: str, display_name: str, organization: str,
            description: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "PayloadType": payload_type,
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadDisplayName": display_name,
    }
    if organization:
        d["PayloadOrganization"] = organization
    if description:
        d["PayloadDescription"] = description
    return d


def _with_uuid(body: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    body["PayloadUUID"] = payload_uuid(body["PayloadIdentifier"], view)
    return body


@dataclass(frozen=True)
class CertificatePayload:
    """A CA certificate without key: `root` for trust anchors, `pkcs1` for intermediates."""

    kind: Literal["root", "pkcs1"]
    certificate: x509.Certificate
    identifier: str
    organization: str = ""

    @property
    def payload_type(self) -> str:
        return ROOT if self.kind == "root" else PKCS1

    def _body(self) -> dict[str, Any]:
        _, name, file_name, cert_der = ca_facts(self.certificate)
        body = _common(self.payload_type, self.identifier, name, self.organization)
        body["PayloadCertificateFileName"] = file_name
        body["PayloadContent"] = cert_der
        return body

    def uuid_view(self) -> dict[str, Any]:
        return self._body()  # a CA certificate is public: its DER is the content

    def to_plist(self) -> dict[str, Any]:
        body = self._body()
        return _with_uuid(body, body)  # the view is the body (read before its UUID is added)


@dataclass(frozen=True)
class IdentityPayload:
    """The device identity (PKCS#12) with its password, so MDM and manual installs are silent."""

    p12: bytes
    password: str
    certificate: x509.Certificate  # the identity's certificate, read from `p12`
    identifier: str
    file_name: str
    display_name: str
    allow_all_apps_access: bool = True
    key_is_extractable: bool = False
    organization: str = ""

    def _public(self) -> dict[str, Any]:
        body = _common(PKCS12, self.identifier, self.display_name, self.organization)
        body["PayloadCertificateFileName"] = self.file_name
        body["AllowAllAppsAccess"] = self.allow_all_apps_access
        body["KeyIsExtractable"] = self.key_is_extractable
        return body

    def uuid_view(self) -> dict[str, Any]:
        # The p12 bytes and password are fresh on every build; the certificate is what the
        # payload means, so its fingerprint stands in for them.
        view = self._public()
        view["CertificateSHA256"] = fingerprint(self.certificate)
        return view

    def to_plist(self) -> dict[str, Any]:
        body = self._public()
        body["PayloadContent"] = self.p12
        body["Password"] = self.password
        return _with_uuid(body, self.uuid_view())


@dataclass(frozen=True)
class Rule:
    rule_type: str
    rule_value: str
    team_identifier: str | None = None
    comment: str | None = None

    def to_plist(self) -> dict[str, Any]:
        d: dict[str, Any] = {"RuleType": self.rule_type, "RuleValue": self.rule_value}
        if self.team_identifier:
            d["TeamIdentifier"] = self.team_identifier
        if self.comment:
            d["Comment"] = self.comment
        return d


@dataclass(frozen=True)
class LoginItemsPayload:
    """com.apple.servicemanagement: marks matching launchd items as managed (macOS 13+, MDM only)."""

    rules: tuple[Rule, ...]
    identifier: str
    display_name: str
    organization: str = ""

    def _body(self) -> dict[str, Any]:
        body = _common(SERVICE_MANAGEMENT, self.identifier, self.display_name, self.organization)
        body["Rules"] = [r.to_plist() for r in self.rules]
        return body

    def uuid_view(self) -> dict[str, Any]:
        return self._body()

    def to_plist(self) -> dict[str, Any]:
        return _with_uuid(self._body(), self.uuid_view())


Payload = Union[CertificatePayload, IdentityPayload, LoginItemsPayload]


@dataclass(frozen=True)
class Profile:
    """A System-scope macOS configuration profile (top-level `Configuration` dictionary)."""

    identifier: str
    display_name: str
    description: str
    organization: str
    payloads: tuple[Payload, ...]
    scope: Literal["System", "User"] = "System"
    target_device_type: int = TARGET_MAC

    def _top(self) -> dict[str, Any]:
        top = _common("Configuration", self.identifier, self.display_name, self.organization,
                      self.description)
        top["PayloadScope"] = self.scope
        top["TargetDeviceType"] = self.target_device_type
        return top

    def to_plist(self) -> dict[str, Any]:
        contents = [p.to_plist() for p in self.payloads]
        view = self._top()
        # Payload UUIDs already digest each payload's non-secret content.
        view["PayloadContent"] = [[c["PayloadIdentifier"], c["PayloadUUID"]] for c in contents]
        top = self._top()
        top["PayloadContent"] = contents
        return _with_uuid(top, view)
