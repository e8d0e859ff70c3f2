"""Password sources: env, file, prompt; resolved values never printable by accident."""

from __future__ import annotations

import json
import logging
import pickle

import click
import pytest

from builder.errors import ConfigError
from builder.fleet.passwords import PasswordResolver, PasswordSource, Secret

SECRET = "Pq9-unmistakable-Secret"


def test_secret_is_bytes_but_masked():
    s = Secret(SECRET.encode())
    assert s == SECRET.encode() and isinstance(s, bytes) and bytes(s) == SECRET.encode()
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", f"{s:>40}", "%s" % s, "%r" % (s,),
                  json.dumps({"p": s}, default=str), repr([s]), repr({"k": s})):
        assert SECRET not in shown and "<secret>" in shown
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and type(clone) is Secret and repr(clone) == "<secret>"


def test_secret_not_logged(caplog):
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").warning("password is %s / %r", Secret(b"xyzzy-1"), Secret(b"xyzzy-1"))
    assert "xyzzy-1" not in caplog.text


def test_env_source(monkeypatch):
    monkeypatch.setenv("PFX_PW", SECRET)
    src = PasswordSource("env", "PFX_PW")
    value = src.resolve("device mac01 (devices.csv:2)")
    assert value == SECRET.encode() and isinstance(value, Secret)
    assert SECRET not in repr(src)


def test_env_missing_and_empty_name_device_and_variable(monkeypatch):
    monkeypatch.delenv("PFX_PW", raising=False)
    with pytest.raises(ConfigError) as info:
        PasswordSource("env", "PFX_PW").resolve("device mac01 (devices.csv:2)")
    assert str(info.value).startswith("device mac01 (devices.csv:2): environment variable "
                                      "PFX_PW is not set")
    monkeypatch.setenv("PFX_PW", "")
    with pytest.raises(ConfigError, match="device mac01 .*PFX_PW is empty"):
        PasswordSource("env", "PFX_PW").resolve("device mac01 (devices.csv:2)")


@pytest.mark.parametrize("content,expected", [
    (SECRET.encode() + b"\n", SECRET.encode()),
    (SECRET.encode() + b"\r\nsecond line\n", SECRET.encode()),
    (SECRET.encode(), SECRET.encode()),
    (b"\xef\xbb\xbf" + SECRET.encode() + b"\n", SECRET.encode()),
    ("pässwörd\n".encode(), "pässwörd".encode()),
    (b" spaced \n", b" spaced "),  # only the line ending is removed
])
def test_file_first_line(tmp_path, content, expected):
    p = tmp_path / "pw"
    p.write_bytes(content)
    assert PasswordSource("file", str(p)).resolve("x") == expected


def test_file_errors_never_show_content(tmp_path):
    p = tmp_path / "pw"
    p.write_bytes(b"\n" + SECRET.encode())
    with pytest.raises(ConfigError) as info:
        PasswordSource("file", str(p)).resolve("device mac01 (devices.csv:2)")
    assert "empty first line" in str(info.value) and SECRET not in str(info.value)
    assert str(info.value).startswith("device mac01 (devices.csv:2): ")
    with pytest.raises(ConfigError, match="does not exist"):
        PasswordSource("file", str(tmp_path / "none")).resolve("d")
    with pytest.raises(ConfigError, match="is a directory"):
        PasswordSource("file", str(tmp_path)).resolve("d")


def test_resolver_without_source_needs_ask():
    with pytest.raises(ConfigError) as info:
        PasswordResolver().resolve(None, "device mac01 (devices.csv:2)")
    assert "no password source" in str(info.value) and "--ask-password" in str(info.value)


def test_resolver_prompts_once_per_distinct_source(monkeypatch):
    monkeypatch.delenv("UNSET_PW", raising=False)
    monkeypatch.setenv("SET_PW", "from-env")
    calls = []

    def fake_prompt(text, **kw):
        calls.append((text, kw))
        return f"typed-{len(calls)}"

    monkeypatch.setattr(click, "prompt", fake_prompt)
    r = PasswordResolver(ask=True)
    a = r.resolve(None, "device a")
    b = r.resolve(None, "device b")
    c = r.resolve(PasswordSource("env", "UNSET_PW"), "device c")
    d = r.resolve(PasswordSource("env", "UNSET_PW"), "device d")
    e = r.resolve(PasswordSource("env", "SET_PW"), "device e")
    assert (a, b, c, d, e) == (b"typed-1", b"typed-1", b"typed-2", b"typed-2", b"from-env")
    assert len(calls) == 2
    for text, kw in calls:
        assert kw["hide_input"] is True and kw["err"] is True  # stdout stays clean for --json
    assert "UNSET_PW" in calls[1][0]
    assert "typed" not in repr(r)


def test_resolver_without_ask_never_prompts(monkeypatch):
    monkeypatch.delenv("UNSET_PW", raising=False)
    monkeypatch.setattr(click, "prompt", lambda *a, **k: pytest.fail("prompted"))
    with pytest.raises(ConfigError, match="UNSET_PW is not set"):
        PasswordResolver().resolve(PasswordSource("env", "UNSET_PW"), "device c")


def test_empty_prompt_refused(monkeypatch):
    monkeypatch.setattr(click, "prompt", lambda *a, **k: "")
    with pytest.raises(ConfigError, match="empty password"):
        PasswordResolver(ask=True).resolve(None, "device a")


# --- the SCEP challenge -------------------------------------------------------------------------

CHALLENGE = "Chall3nge-distinctive-5150"


def test_challenge_from_env_and_file(tmp_path, monkeypatch):
    from builder.fleet.passwords import ChallengeSource

    monkeypatch.setenv("SCEP_CHALLENGE", CHALLENGE)
    assert ChallengeSource("env", "SCEP_CHALLENGE").resolve() == CHALLENGE.encode()
    monkeypatch.setenv("SCEP_CHALLENGE", "")
    with pytest.raises(ConfigError, match="environment variable SCEP_CHALLENGE .the SCEP challenge. is empty"):
        ChallengeSource("env", "SCEP_CHALLENGE").resolve("[enroll]")
    monkeypatch.delenv("SCEP_CHALLENGE")
    with pytest.raises(ConfigError, match="is not set .export SCEP_CHALLENGE=... before running.$"):
        ChallengeSource("env", "SCEP_CHALLENGE").resolve("[enroll]")
    f = tmp_path / "challenge.txt"
    f.write_text(CHALLENGE + "\r\nsecond line\n")
    value = ChallengeSource("file", str(f)).resolve()
    assert value == CHALLENGE.encode() and CHALLENGE not in repr(value) + str(value) + f"{value}"


def test_challenge_command_runs_per_request_and_never_shows_its_output(tmp_path):
    from builder.fleet.passwords import ChallengeSource

    script = tmp_path / "ndes-challenge.sh"
    script.write_text('#!/bin/sh\nn=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count\n'
                      f'printf "%s-%s\\r\\nignored\\n" "{CHALLENGE}" "$n"\necho "logged in to NDES" >&2\n')
    script.chmod(0o755)
    source = ChallengeSource("command", str(script), (str(script),), str(tmp_path))
    assert source.per_request and CHALLENGE not in repr(source)
    assert source.resolve() == f"{CHALLENGE}-1".encode()
    assert source.resolve() == f"{CHALLENGE}-2".encode()  # a fresh one each time

    script.write_text(f"#!/bin/sh\necho {CHALLENGE}\nexit 3\n")
    with pytest.raises(ConfigError) as info:
        source.resolve("device mac01 (devices.csv:2)")
    text = str(info.value)
    assert text == (f"device mac01 (devices.csv:2): challenge_command {script} failed with exit status 3 "
                    "(its output is not shown: it may hold the challenge)")
    script.write_text("#!/bin/sh\necho\n")
    with pytest.raises(ConfigError, match="printed no challenge on its first line"):
        source.resolve()
    missing = ChallengeSource("command", "nope", (str(tmp_path / "nope"),), str(tmp_path))
    with pytest.raises(ConfigError, match="no such program"):
        missing.resolve()
