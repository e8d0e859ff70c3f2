"""age encryption (age-encryption.org/v1) through pyrage, a maintained binding of the Rust `age`
crate: recipients and identities as the age CLI writes them, and streaming encrypt/decrypt.

fleetpkg never implements the cipher; this module only turns text and files into pyrage objects
and pyrage's exceptions into one clear FormatError line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Sequence

import pyrage

from ..errors import FormatError

RECIPIENT_HINT = ("give an age public key (age1..., from `age-keygen -y KEYFILE`) or an SSH public key "
                  "(a line of ~/.ssh/id_ed25519.pub or id_rsa.pub)")
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
IDENTITY_LIMIT = 1 << 20  # an identity file is a few lines; refuse to slurp anything big


def parse_recipient(text: str, where: str | None = None):
    """One age recipient: `age1...` (X25519) or an `ssh-ed25519` / `ssh-rsa` public key line."""
    value = text.strip()
    kind = value.split(" ", 1)[0]
    if value.upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in value:
        raise FormatError("this is a private key, not a recipient: give its public key, and treat the "
                          "private key as exposed (it was typed where others can read it)", where=where,
                          hint=RECIPIENT_HINT)
    try:
        if value.startswith("age1") and " " not in value:
            return pyrage.x25519.Recipient.from_str(value)
        if kind in _SSH_TYPES:
            return pyrage.ssh.Recipient.from_str(value)
    except pyrage.RecipientError as exc:
        raise FormatError(f"{_shown(value)} is not a valid age recipient ({exc})", where=where,
                          hint=RECIPIENT_HINT) from None
    raise FormatError(f"{_shown(value)} is not an age recipient", where=where, hint=RECIPIENT_HINT)


def _shown(value: str) -> str:
    """A recipient as messages name it: public, but long; the start is enough to recognise it."""
    return repr(value if len(value) <= 40 else value[:32] + "...")


class NotARecipient(FormatError):
    """The file is intact, but sealed to other recipients than the identities given."""


def load_identity_files(paths: Sequence[os.PathLike]) -> list:
    """The private keys in every identity file of `paths` (see load_identities)."""
    return [identity for path in paths for identity in load_identities(Path(path))]


def load_identities(path: Path) -> list:
    """The private keys in an identity file: age's (AGE-SECRET-KEY-1... lines, `#` comments, as
    age-keygen writes them) or an unencrypted OpenSSH ed25519/RSA private key."""
    shown = str(path)
    if shown.lstrip().upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in shown or "\n" in shown:
        raise FormatError("this is a private key, not the name of a file holding one: write it to a file "
                          "(mode 0600) and give that file's name; treat the key as exposed (it was typed or "
                          "stored where others can read it)")  # and never repeat it in this line
    try:
        with open(path, "rb") as fh:
            data = fh.read(IDENTITY_LIMIT + 1)
    except FileNotFoundError:
        raise FormatError("no such identity file", where=shown) from None
    except IsADirectoryError:
        raise FormatError("is a folder, not an identity file", where=shown) from None
    if len(data) > IDENTITY_LIMIT:
        raise FormatError("is too large to be an age or SSH identity file", where=shown)
    if b"-----BEGIN" in data:
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except pyrage.IdentityError as exc:
            hint = ("remove the passphrase from a copy (ssh-keygen -p -N '' -f COPY), or decrypt with "
                    "`age -d -i KEYFILE`, which asks for it") if "decrypted" in str(exc) else None
            raise FormatError(f"cannot use this SSH private key ({exc})", where=shown, hint=hint) from None
    identities = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line.decode("ascii")))
        except (UnicodeDecodeError, pyrage.IdentityError):
            raise FormatError(f"line {number} is not an age secret key (AGE-SECRET-KEY-1...)", where=shown,
                              hint="give the file age-keygen wrote, or an OpenSSH private key") from None
    if not identities:
        raise FormatError("holds no age secret key", where=shown, hint="give the file age-keygen wrote")
    return identities


def encrypt_stream(source: BinaryIO, dest: BinaryIO, recipients: Sequence) -> None:
    """Encrypt everything `source` yields into `dest`, 64 KiB at a time (age's STREAM chunks)."""
    try:
        pyrage.encrypt_io(source, dest, list(recipients))
    except pyrage.EncryptError as exc:
        raise FormatError(f"age encryption failed ({exc})") from None


def decrypt_stream(source: BinaryIO, dest: BinaryIO, identities: Sequence, where: str) -> None:
    """Decrypt `source` into `dest`. Each chunk is authenticated before it is written, but a damaged
    file is only known to be damaged when its damaged chunk is reached: callers must discard what
    was written when this raises."""
    try:
        pyrage.decrypt_io(source, dest, list(identities))
    except (pyrage.DecryptError, OSError) as exc:  # a chunk that fails authentication is an OSError
        text = str(exc)
        if "No matching keys" in text:
            raise NotARecipient("none of the given identities can open it: it was sealed to other recipients",
                              where=where, hint="use the private key of a recipient the build names "
                                                "(manifest.json, sealed_to)") from None
        raise FormatError(f"is damaged or not an age file ({text})", where=where) from None


def is_age_file(path: os.PathLike) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(b"age-encryption.org/v1\n")) == b"age-encryption.org/v1\n"
