"""Where .pfx/.p12 passwords come from, and keeping them out of every message and log.

A password is named by its source (an environment variable, a file, or an interactive prompt),
never written in the config or on the command line. Resolved values are `Secret` bytes whose
repr/str are masked, so an accidental f-string, log line or `--json` dump shows `<secret>`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_MASK = "<secret>"


class Secret(bytes):
    """Password bytes that refuse to be printed: use them, don't show them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK


@dataclass(frozen=True)
class PasswordSource:
    """kind "env": name is the variable; "file": name is the file path; "prompt": name labels
    the prompt. Holds no secret itself, so its repr is safe to print."""

    kind: Literal["env", "file", "prompt"]
    name: str

    def describe(self) -> str:
        return {
            "env": f"environment variable {self.name}",
            "file": f"password file {self.name}",
            "prompt": f"prompt for {self.name}",
        }[self.kind]

    def resolve(self, owner: str | None = None) -> Secret:
        """Read the password now; `owner` (e.g. "device mac01 (devices.csv:3)") names who needs
        it in error messages. A "prompt" source asks on the terminal every time it is called
        (use PasswordResolver to ask once)."""
        where = owner or self.describe()
        if self.kind == "env":
            value = os.environ.get(self.name)
            if value is None:
                raise ConfigError(
                    f"environment variable {self.name} is not set", where=where,
                    hint=f"export {self.name}=... before running, or pass --ask-password",
                )
            if value == "":
                raise ConfigError(
                    f"environment variable {self.name} is empty", where=where,
                    hint=f"set {self.name} to the .pfx password",
                )
            return Secret(value.encode("utf-8"))
        if self.kind == "file":
            return Secret(_read_first_line(Path(self.name), where))
        if self.kind == "prompt":
            import click

            value = click.prompt(
                f"Password for {self.name}", hide_input=True, err=True, show_default=False,
            )
            if value == "":
                raise ConfigError("empty password entered", where=where)
            return Secret(value.encode("utf-8"))
        raise ConfigError(f"unknown password source kind {self.kind!r}", where=where)


def _read_first_line(path: Path, where: str) -> bytes:
    """First line of a password file, without its line ending (the file may hold a comment or
    a trailing newline after it). Never echoes file contents in errors."""
    try:
        with path.open("rb") as fh:
            line = fh.readline(64 * 1024)
    except FileNotFoundError:
        raise ConfigError(f"password file {path} does not exist", where=where,
                          hint="create it holding the password on its first line") from None
    except IsADirectoryError:
        raise ConfigError(f"password file {path} is a directory", where=where) from None
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc.strerror}",
                          where=where) from None
    if line.startswith(b"\xef\xbb\xbf"):  # a BOM left by Windows editors is not part of it
        line = line[3:]
    line = line.rstrip(b"\r\n")
    if not line:
        raise ConfigError(f"password file {path} has an empty first line", where=where,
                          hint="put the password on the first line")
    return line


@dataclass
class PasswordResolver:
    """Resolves sources once each (so one prompt serves every device sharing a source).

    With ask=True, a device with no configured source and an env source whose variable is unset
    fall back to one hidden prompt per distinct source; without it they are errors.
    """

    ask: bool = False
    _cache: dict[PasswordSource, Secret] = field(default_factory=dict, repr=False)

    def resolve(self, source: PasswordSource | None, owner: str) -> Secret:
        if source is None:
            if not self.ask:
                raise ConfigError(
                    "no password source", where=owner,
                    hint="set password_env or password_file in [devices] or in devices.csv, "
                         "or pass --ask-password",
                )
            source = PasswordSource("prompt", "the .pfx files without a password source")
        elif self.ask and source.kind == "env" and not os.environ.get(source.name):
            source = PasswordSource("prompt", f"{source.name} (not set)")
        if source not in self._cache:
            self._cache[source] = source.resolve(owner)
        return self._cache[source]

    def __repr__(self) -> str:
        return f"PasswordResolver(ask={self.ask}, resolved={len(self._cache)})"


COMMAND_TIMEOUT = 120  # seconds for a challenge_command (it may log in to NDES's admin page)


@dataclass(frozen=True)
class ChallengeSource:
    """Where a SCEP challenge password comes from: an environment variable, the first line of a
    file, or a command whose first output line is a fresh one (NDES hands out single-use
    passwords by default), run once per request. Holds no secret itself: its repr is safe."""

    kind: Literal["env", "file", "command"]
    name: str  # the variable, the file path, or the command as written (for messages)
    argv: tuple[str, ...] = ()  # the command, split; run without a shell
    cwd: str | None = None  # the command runs in fleet.toml's folder

    @property
    def per_request(self) -> bool:
        return self.kind == "command"

    def describe(self) -> str:
        return {"env": f"environment variable {self.name}", "file": f"challenge file {self.name}",
                "command": f"challenge_command {self.argv[0] if self.argv else self.name}"}[self.kind]

    def resolve(self, owner: str | None = None) -> Secret:
        """The challenge now (a command is run every call). Errors never show its value or the
        command's output: the command's stderr goes to ours, its stdout only into the Secret."""
        import subprocess

        where = owner or self.describe()
        if self.kind == "env":
            value = os.environ.get(self.name)
            if not value:
                raise ConfigError(f"environment variable {self.name} (the SCEP challenge) is "
                                  f"{'empty' if value == '' else 'not set'}", where=where,
                                  hint=f"export {self.name}=... before running")
            return Secret(value.encode("utf-8"))
        if self.kind == "file":
            return Secret(_read_first_line(Path(self.name), where))
        try:
            done = subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  cwd=self.cwd, timeout=COMMAND_TIMEOUT, check=False)
        except FileNotFoundError:
            raise ConfigError(f"{self.describe()}: no such program", where=where,
                              hint="give the program's path, relative to fleet.toml") from None
        except PermissionError:
            raise ConfigError(f"{self.describe()}: not executable", where=where,
                              hint="chmod +x it") from None
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{self.describe()} did not finish within {COMMAND_TIMEOUT} s",
                              where=where) from None
        if done.returncode != 0:
            raise ConfigError(f"{self.describe()} failed with exit status {done.returncode} "
                              "(its output is not shown: it may hold the challenge)", where=where)
        line = done.stdout.split(b"\n", 1)[0].strip()
        if not line:
            raise ConfigError(f"{self.describe()} printed no challenge on its first line",
                              where=where)
        return Secret(line)
