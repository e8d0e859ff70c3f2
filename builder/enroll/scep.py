"""SCEP messages (RFC 8894): PKCSReq and CertPoll built, CertRep read, GetCACert answers sorted.

cryptography makes the key, the CSR and the pkcsPKIEnvelope (PKCS7EnvelopeBuilder, AES-128-CBC)
and opens AES replies (pkcs7_decrypt_der). The SignedData around the envelope is written with
builder/der.py because PKCS7SignatureBuilder has no way to add SCEP's own signed attributes
(messageType, transactionID, senderNonce), and replies are read and verified with the CMS reader
the package signatures use. Replies encrypted with DES or 3DES (micromdm's scepserver answers in
DES-CBC, older NDES in 3DES), which pkcs7_decrypt_der does not open, are decrypted here.

Everything here is pure: bytes and certificates in, bytes or a Reply out; no I/O, no clock but
the transient signer certificate's validity. Secrets (the challenge, the private key) go into
the encrypted envelope only and never into an exception message.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from ..certs.chain import describe, signed_by
from ..errors import EnrollError, FormatError
from ..formats import der
from ..formats.pkg import cms
from ..profiles.cms import certificate_for, issuer_der

# SCEP signed attributes (RFC 8894 section 3.2.1)
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_DES_EDE3_CBC = "1.2.840.113549.3.7"

CERT_REP, PKCS_REQ, CERT_POLL = "3", "19", "20"
MESSAGE_TYPES = {"3": "CertRep", "17": "RenewalReq", "19": "PKCSReq", "20": "CertPoll",
                 "21": "GetCert", "22": "GetCRL"}
SUCCESS, FAILURE, PENDING = "SUCCESS", "FAILURE", "PENDING"
PKI_STATUS = {"0": SUCCESS, "2": FAILURE, "3": PENDING}

# failInfo code -> (RFC 8894 name, what it usually means for an enrolling admin)
FAIL_INFO = {
    "0": ("badAlg", "the CA does not accept the request's algorithms"),
    "1": ("badMessageCheck", "the CA could not verify the request's signature"),
    "2": ("badRequest", "a wrong or already used challenge password, a subject its template "
                        "does not allow, or a certificate for this name it will not renew yet"),
    "3": ("badTime", "the request's time is not acceptable to the CA (check both clocks)"),
    "4": ("badCertId", "the CA found no certificate or request matching the transaction"),
}

DIGEST_OIDS = {"sha512": cms.OID_SHA512, "sha256": cms.OID_SHA256, "sha1": cms.OID_SHA1}
_HASHES = {"sha512": hashes.SHA512, "sha256": hashes.SHA256, "sha1": hashes.SHA1}

# content encryption of a CertRep's envelope: AES goes to pkcs7_decrypt_der, DES-family here
_AES_CBC = {"2.16.840.1.101.3.4.1.2", "2.16.840.1.101.3.4.1.22", "2.16.840.1.101.3.4.1.42"}
_DES_CBC = {"1.3.14.3.2.7": 8, OID_DES_EDE3_CBC: 24}  # OID -> key length (DES, 3DES)

REQUESTED_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
SIGNER_VALIDITY = timedelta(days=1)  # the transient self-signed certificate's lifetime
_PRINTABLE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def fail_info_words(code: str | None, text: str | None = None) -> str:
    """`failInfo 2` -> "badRequest (a wrong or already used challenge ...)" (+ failInfoText)."""
    if code is None:
        words = "no failInfo given"
    elif code in FAIL_INFO:
        name, meaning = FAIL_INFO[code]
        words = f"{name} ({meaning})"
    else:
        words = f"failInfo {code!r} (not defined by RFC 8894)"
    if text:
        words += f"; the CA says: {' '.join(text.split())[:200]}"
    return words


# -- requests -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Requester:
    """The new key pair, the transient self-signed certificate that signs the pkiMessages and
    receives the encrypted reply, and the subject asked for. The key stays out of repr."""

    key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    certificate: x509.Certificate
    subject: x509.Name
    transaction_id: str


@dataclass(frozen=True)
class Request:
    """One pkiMessage ready to send, with what its CertRep must echo."""

    message: bytes = field(repr=False)
    message_type: str
    transaction_id: str
    sender_nonce: bytes


def subject_name(hostname: str, extra: Sequence[tuple[str, str]] = ()) -> x509.Name:
    """The requested subject: `extra` (C, ST, L, O, OU in that order of appearance), then
    CN = hostname exactly as the inventory spells it."""
    oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
            "L": NameOID.LOCALITY_NAME, "O": NameOID.ORGANIZATION_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
    attrs = [x509.NameAttribute(oids[k], v) for k, v in extra]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, hostname)])


def new_requester(key: rsa.RSAPrivateKey, subject: x509.Name,
                  now: datetime | None = None) -> Requester:
    """RFC 8894 section 2.3: a requester without a certificate signs with a self-signed one for
    the new key, naming the requested subject."""
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=10)).not_valid_after(now + SIGNER_VALIDITY)
            .sign(key, hashes.SHA256()))
    return Requester(key, cert, subject, transaction_id(key.public_key()))


def transaction_id(public_key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo in hex (RFC 8894 section 3.2.1.1 recommends a hash of
    the key): the same key always gives the same transaction, as polling needs."""
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest().upper()


def build_csr(requester: Requester, hostname: str, challenge: bytes | None,
              digest: str = "sha256") -> bytes:
    """PKCS#10 (DER): the requested subject, SAN DNS = hostname, the usages the vendor's rules
    need (a CA that honours requested extensions issues them; NDES picks its general-purpose
    template for a request asking for both signature and encryption), and the challengePassword
    (PrintableString when it fits that alphabet, else UTF8String; both are DirectoryString)."""
    builder = (x509.CertificateSigningRequestBuilder().subject_name(requester.subject)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
               .add_extension(REQUESTED_KEY_USAGE, critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if challenge is not None:
        text = bytes(challenge).decode("utf-8")
        # `_tag` is cryptography's (underscored) way to pick the string type; UTF8 otherwise
        tag = (x509.name._ASN1Type.PrintableString if set(text) <= _PRINTABLE
               else x509.name._ASN1Type.UTF8String)
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, bytes(challenge), _tag=tag)
    csr = builder.sign(requester.key, _HASHES[digest]())
    return csr.public_bytes(serialization.Encoding.DER)


def envelope(content: bytes, recipient: x509.Certificate, cipher: str = "aes128") -> bytes:
    """pkcsPKIEnvelope: `content` encrypted to the CA/RA encryption certificate, with AES-128-CBC
    (PKCS7EnvelopeBuilder) or, for a server that does not offer AES (NDES lists only DES3 in
    GetCACaps), 3DES-CBC, which RFC 8894 keeps for such servers and PKCS7EnvelopeBuilder lacks."""
    if cipher == "aes128":
        return (pkcs7.PKCS7EnvelopeBuilder().set_data(content).add_recipient(recipient)
                .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    if cipher != "des3":
        raise ValueError(f"unknown content cipher {cipher!r}")
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

    session, iv = os.urandom(24), os.urandom(8)
    pad = 8 - len(content) % 8
    encryptor = Cipher(TripleDES(session), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(content + bytes([pad]) * pad) + encryptor.finalize()
    transported = recipient.public_key().encrypt(session, padding.PKCS1v15())
    recipient_info = der.seq(
        der.integer(0),
        der.seq(issuer_der(recipient), der.integer(recipient.serial_number)),
        cms.algorithm(cms.OID_RSA),
        der.octets(transported),
    )
    enveloped = der.seq(
        der.integer(0),
        der.set_of(recipient_info),
        der.seq(der.oid(cms.OID_DATA), der.seq(der.oid(OID_DES_EDE3_CBC), der.octets(iv)),
                der.tlv(0x80, encrypted)),
    )
    return der.seq(der.oid(OID_ENVELOPED_DATA), der.explicit(0, enveloped))


def _printable(text: str) -> bytes:
    return der.tlv(der.PRINTABLE_STRING, text.encode("ascii"))


def _pki_message(requester: Requester, message_type: str, content: bytes, recipient: x509.Certificate,
                 digest: str, cipher: str) -> Request:
    """SignedData{id-data: envelope(content)} signed by the requester with SCEP's attributes."""
    nonce = os.urandom(16)
    enveloped = envelope(content, recipient, cipher)
    digest_oid = DIGEST_OIDS[digest]
    attrs = der.set_of(
        cms.attribute(cms.OID_CONTENT_TYPE, der.oid(cms.OID_DATA)),
        cms.attribute(cms.OID_MESSAGE_DIGEST, der.octets(cms.digest(digest_oid, enveloped))),
        cms.attribute(OID_MESSAGE_TYPE, _printable(message_type)),
        cms.attribute(OID_TRANSACTION_ID, _printable(requester.transaction_id)),
        cms.attribute(OID_SENDER_NONCE, der.octets(nonce)),
    )
    signature = requester.key.sign(attrs, padding.PKCS1v15(), _HASHES[digest]())
    cert = requester.certificate
    signer_info = der.seq(
        der.integer(1),
        der.seq(issuer_der(cert), der.integer(cert.serial_number)),
        cms.algorithm(digest_oid),
        der.implicit_constructed(0, der.parse(attrs).value),
        cms.algorithm(cms.OID_RSA),
        der.octets(signature),
    )
    signed = der.seq(
        der.integer(1),
        der.set_of(cms.algorithm(digest_oid)),
        der.seq(der.oid(cms.OID_DATA), der.explicit(0, der.octets(enveloped))),
        der.implicit_constructed(0, cert.public_bytes(serialization.Encoding.DER)),
        der.set_of(signer_info),
    )
    message = der.seq(der.oid(cms.OID_SIGNED_DATA), der.explicit(0, signed))
    return Request(message, message_type, requester.transaction_id, nonce)


def pkcs_req(requester: Requester, csr: bytes, recipient: x509.Certificate,
             digest: str = "sha256", cipher: str = "aes128") -> Request:
    """PKCSReq (19): the CSR, enveloped to `recipient`, signed by the requester."""
    return _pki_message(requester, PKCS_REQ, csr, recipient, digest, cipher)


def cert_poll(requester: Requester, ca: x509.Certificate, recipient: x509.Certificate,
              digest: str = "sha256", cipher: str = "aes128") -> Request:
    """CertPoll (20, GetCertInitial in older drafts): IssuerAndSubject for the same transaction."""
    body = der.seq(ca.subject.public_bytes(), requester.subject.public_bytes())
    return _pki_message(requester, CERT_POLL, body, recipient, digest, cipher)


# -- replies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    status: str  # SUCCESS | FAILURE | PENDING
    fail_info: str | None = None  # the failInfo code, for FAILURE
    fail_text: str | None = None  # failInfoText, if the CA sent one
    certificates: tuple[x509.Certificate, ...] = ()  # SUCCESS: the issued certificate (+ chain)

    @property
    def reason(self) -> str:
        return fail_info_words(self.fail_info, self.fail_text)

    def issued_for(self, key: rsa.RSAPrivateKey) -> x509.Certificate:
        """The certificate among the reply's that holds `key`'s public half."""
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        mine = key.public_key().public_bytes(*spki)
        for cert in self.certificates:
            if cert.public_key().public_bytes(*spki) == mine:
                return cert
        raise EnrollError("the CA answered SUCCESS but sent no certificate for the requested key")


def _attribute_text(si: cms.SignerInfo, oid: str) -> str | None:
    values = si.attribute_values(oid, signed=True)
    if not values:
        return None
    node = der.parse(values[0])
    if node.tag not in (der.PRINTABLE_STRING, der.UTF8_STRING, der.IA5_STRING):
        raise FormatError(f"attribute {oid} is not a string")
    return node.value.decode("utf-8", errors="replace")


def _attribute_octets(si: cms.SignerInfo, oid: str) -> bytes | None:
    values = si.attribute_values(oid, signed=True)
    return der.parse(values[0]).as_octets() if values else None


def _signer(si: cms.SignerInfo, trusted: Sequence[x509.Certificate]) -> x509.Certificate:
    cert = certificate_for(si, trusted)
    if cert is None:
        raise EnrollError("the CA's reply is signed by a certificate that GetCACert did not vouch for")
    return cert


def read_reply(data: bytes, request: Request, requester: Requester,
               trusted: Sequence[x509.Certificate]) -> Reply:
    """Verify a CertRep against the CA/RA certificates in `trusted` and the request it answers
    (transactionID, recipientNonce), then open it. EnrollError says what is wrong with it."""
    try:
        sd = cms.parse_signed_data(data)
        if len(sd.signer_infos) != 1:
            raise EnrollError(f"the CA's reply has {len(sd.signer_infos)} signers, expected one")
        si = sd.signer_infos[0]
        signer = _signer(si, trusted)
        content = sd.content or b""
        why = cms.verify_signer(sd, si, content, signer.public_key())
        if why is not None:
            raise EnrollError(f"the CA's reply does not verify with {describe(signer)}: {why}")
        message_type = _attribute_text(si, OID_MESSAGE_TYPE)
        if message_type != CERT_REP:
            got = MESSAGE_TYPES.get(message_type or "", repr(message_type))
            raise EnrollError(f"the CA answered with a {got} message, expected CertRep")
        if _attribute_text(si, OID_TRANSACTION_ID) != request.transaction_id:
            raise EnrollError("the CA's reply is for another transaction (transactionID differs)")
        if _attribute_octets(si, OID_RECIPIENT_NONCE) != request.sender_nonce:
            raise EnrollError("the CA's reply does not echo this request's nonce (a replayed or "
                              "misrouted reply)")
        code = _attribute_text(si, OID_PKI_STATUS)
        status = PKI_STATUS.get(code or "")
        if status is None:
            raise EnrollError(f"the CA's reply has pkiStatus {code!r}, not 0, 2 or 3")
        if status == FAILURE:
            return Reply(FAILURE, _attribute_text(si, OID_FAIL_INFO),
                         _attribute_text(si, OID_FAIL_INFO_TEXT))
        if status == PENDING:
            return Reply(PENDING)
        if not content:
            raise EnrollError("the CA answered SUCCESS with no content")
        inner = decrypt_envelope(content, requester.certificate, requester.key)
        return Reply(SUCCESS, certificates=tuple(certificate_set(inner)))
    except FormatError as exc:
        raise EnrollError(f"the CA's reply is malformed ({exc})") from None


def decrypt_envelope(data: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """Open a CMS EnvelopedData addressed to `certificate`: AES with pkcs7_decrypt_der, DES and
    3DES (which it does not support) with RSA key transport + CBC here."""
    info = der.parse(data).expect(der.SEQUENCE, "ContentInfo").children()
    if len(info) != 2 or info[0].as_oid() != OID_ENVELOPED_DATA:
        raise FormatError("the encrypted part is not a CMS EnvelopedData")
    env = info[1].expect(0xA0, "EnvelopedData wrapper").child(0).expect(der.SEQUENCE, "EnvelopedData")
    fields = env.children()
    pos = 2 if fields[1].tag == 0xA0 else 1  # [0] originatorInfo is optional
    recipients, encrypted = fields[pos], fields[pos + 1].children()
    algorithm = encrypted[1].child(0).as_oid()
    if algorithm in _AES_CBC:
        try:
            return pkcs7.pkcs7_decrypt_der(data, certificate, key, [])
        except ValueError as exc:
            raise FormatError(f"cannot decrypt the CA's reply ({exc})") from None
    if algorithm not in _DES_CBC:
        raise FormatError(f"the CA encrypted its reply with {algorithm}, which fleetpkg cannot open "
                          "(it reads AES, 3DES and DES)")
    session = _transported_key(recipients, certificate, key)
    if len(session) != _DES_CBC[algorithm]:
        raise FormatError("the reply's content-encryption key has the wrong length")
    iv = encrypted[1].child(1).as_octets()
    body = encrypted[2] if len(encrypted) > 2 else None
    if body is None or body.tag not in (0x80, 0xA0):
        raise FormatError("the CA's encrypted reply has no content")
    ciphertext = body.value if body.tag == 0x80 else b"".join(c.as_octets() for c in body.children())
    if len(iv) != 8 or not ciphertext or len(ciphertext) % 8:
        raise FormatError("the CA's DES-encrypted reply has a bad IV or length")
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

    des_key = session * 3 if len(session) == 8 else session  # DES = 3DES with K1 = K2 = K3
    plain = Cipher(TripleDES(des_key), modes.CBC(iv)).decryptor()
    padded = plain.update(ciphertext) + plain.finalize()
    pad = padded[-1]
    if not 1 <= pad <= 8 or padded[-pad:] != bytes([pad]) * pad:
        raise FormatError("cannot decrypt the CA's reply (bad padding: not addressed to this key?)")
    return padded[:-pad]


def _transported_key(recipients: der.Node, certificate: x509.Certificate,
                     key: rsa.RSAPrivateKey) -> bytes:
    """The content-encryption key from the KeyTransRecipientInfo naming `certificate`."""
    mine = der.seq(issuer_der(certificate), der.integer(certificate.serial_number))
    for info in recipients.expect(der.SET, "recipientInfos").children():
        parts = info.children()
        if info.tag == der.SEQUENCE and len(parts) == 4 and parts[1].raw == mine:
            try:
                return key.decrypt(parts[3].as_octets(), padding.PKCS1v15())
            except ValueError:
                raise FormatError("cannot decrypt the CA's reply (key transport failed)") from None
    raise FormatError("the CA's reply is not encrypted to this request's certificate")


# -- GetCACert ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaCertificates:
    """What GetCACert vouched for, by role: `encryption` receives the envelope, `signing` signs
    CertReps (NDES: two RA certificates; a plain CA: the CA for both); `chain` is the CA
    certificates to store next to the device certificate."""

    encryption: x509.Certificate
    signing: x509.Certificate
    issuer: x509.Certificate  # the CA that issues device certificates (CertPoll names it)
    chain: tuple[x509.Certificate, ...]  # issuer first
    trusted: tuple[x509.Certificate, ...]  # every certificate a reply may be signed by

    @property
    def has_ra(self) -> bool:
        return self.encryption not in self.chain


def certificate_set(data: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only ("degenerate") PKCS#7, in the order sent. Read with the
    CMS reader rather than load_der_pkcs7_certificates, which warns about (and may come to
    refuse) the unsorted SET OF that NDES and openssl crl2pkcs7 write."""
    certs = []
    for raw in cms.parse_signed_data(data).certificates:
        cert = cms.load_certificate(raw)
        if cert is None:
            raise FormatError("the certificate set holds a malformed certificate")
        certs.append(cert)
    return certs


def parse_ca_certificates(body: bytes) -> list[x509.Certificate]:
    """GetCACert's body: one DER certificate (application/x-x509-ca-cert) or a certs-only
    PKCS#7 (application/x-x509-ca-ra-cert); PEM certificates are accepted too."""
    certs: list[x509.Certificate] = []
    try:
        if body.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
            certs = x509.load_pem_x509_certificates(body)
        else:
            single = cms.load_certificate(body)
            certs = [single] if single is not None else certificate_set(body)
    except (ValueError, FormatError):
        certs = []
    if not certs:
        raise EnrollError("GetCACert did not return a certificate or a PKCS#7 certificate set")
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def vouched(certs: Sequence[x509.Certificate], pin: str | None) -> list[x509.Certificate]:
    """The certificates the pin vouches for: the pinned one, those it signed, and -- when the pin
    is an RA certificate -- its issuer (proven by the pinned certificate's signature) and that
    issuer's other certificates. Without a pin (https, no ca_fingerprint) TLS vouches for all.

    The pinned certificate must be among them, else EnrollError: nothing carrying a key or a
    challenge may go to a server that is not the expected CA."""
    if pin is None:
        return list(certs)
    pinned = next((c for c in certs if fingerprint(c) == pin), None)
    if pinned is None:
        sent = "; ".join(f"{describe(c)} sha256 {fingerprint(c)}" for c in certs)
        raise EnrollError(f"no certificate from GetCACert matches [enroll] ca_fingerprint {pin} "
                          f"(the server sent: {sent})",
                          hint="compare with the CA's certificate (certutil -dump, openssl x509 "
                               "-fingerprint -sha256) and fix ca_fingerprint or scep_url")
    anchors = [pinned] + [c for c in certs if c is not pinned and signed_by(pinned, c)]
    out = [c for c in certs if c in anchors or any(signed_by(c, a) for a in anchors)]
    return out


def select_roles(certs: Sequence[x509.Certificate], pin: str | None) -> CaCertificates:
    """Pick the encryption and signing certificates among the vouched-for ones (RFC 8894 section
    3.5.1: by key usage when RA certificates are present)."""
    trusted = vouched(certs, pin)
    cas = [c for c in trusted if _is_ca(c)]
    ras = [c for c in trusted if not _is_ca(c)]
    # a CA alone, or a CA chain: the issuing CA is the one that signed no other CA here
    leaf = [c for c in cas if not any(o is not c and signed_by(o, c) for o in cas)]
    issuer = (leaf or cas or list(trusted))[0]
    if not ras:
        encryption = signing = issuer
    else:
        def usage(want: str) -> x509.Certificate:
            with_it = [c for c in ras if (ku := _key_usage(c)) is not None and getattr(ku, want)]
            unmarked = [c for c in ras if _key_usage(c) is None]
            return (with_it or unmarked or ras)[0]
        encryption, signing = usage("key_encipherment"), usage("digital_signature")
    for role, cert in (("encryption", encryption), ("signing", signing)):
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise EnrollError(f"the CA's {role} certificate {describe(cert)} has no RSA key; SCEP "
                              "needs RSA for the request envelope")
    chain = (issuer,) + tuple(c for c in cas if c is not issuer)
    return CaCertificates(encryption, signing, issuer, chain, tuple(trusted))
