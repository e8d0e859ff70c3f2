"""payloads/doctor: the on-Mac health check, run in the isolated root against stub launchctl,
security (keychain holding real openssl-made certificates), scutil, sysctl and arch, and fixture
1E Client logs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from builder.artifacts.scripts import wrapper_payload_files
from tests.scripts.certs import Cert, make_ca, make_leaf
from tests.scripts.installer import FAKE_BINARY, SAMPLE, launchd_plist
from tests.scripts.macroot import MacRoot, mac_root  # noqa: F401  (fixture)

FIXTURES = Path(__file__).resolve().parent / "scripts" / "fixtures"
DOCTOR = f"{SAMPLE.support_dir}/doctor"
LABEL = SAMPLE.daemon_label
ROSETTA = "/Library/Apple/usr/libexec/oah/libRosettaRuntime"
EA_LINE = re.compile(r"^<result>(healthy|unhealthy: [^\n<>]+)</result>\n$")
GOOD_CONF = ("# 1E Client configuration\nSwitch=tachyon.acme.local:4000\n"
             "BackgroundChannelUrl=https://tachyon.acme.local/Background\nLoggingLevel=Info\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctor-pki")
    root = make_ca(folder, "Acme Root CA")
    issuing = make_ca(folder, "Acme Issuing CA", issuer=root)
    return {
        "root": root,
        "issuing": issuing,
        "good": make_leaf(folder, issuing, "MAC01.local", san=("MAC01.local",)),
        "san-only": make_leaf(folder, issuing, "Acme device 7", san=("other.acme.local", "mac01.local")),
        "other-host": make_leaf(folder, issuing, "MAC02.local", san=("MAC02.local",)),
        "expiring": make_leaf(folder, issuing, "MAC01.local", days=10),
        "stranger-root": make_ca(folder, "Someone Else Root"),
    }


def put_identity(root: MacRoot, cert: Cert) -> None:
    root.write(f"/stubs/keychain/System.keychain/identities/{cert.sha1()}.pem", cert.pem())


def put_certificate(root: MacRoot, cert: Cert) -> None:
    root.write(f"/stubs/keychain/System.keychain/certs/{cert.sha1()}.pem", cert.pem())


def healthy_mac(root: MacRoot, pki, ctx=SAMPLE) -> None:
    for item in wrapper_payload_files(ctx):
        root.write(item.path, item.data, item.mode)
    root.write(ctx.conf_path, GOOD_CONF)
    root.write(ctx.binary_path, FAKE_BINARY, 0o755)
    root.write(ctx.daemon_plist, launchd_plist(ctx.daemon_label))
    root.daemon_loaded(ctx.daemon_label, "running", 1210)
    root.set_state("LocalHostName", "MAC01")
    root.set_state("hostname", "MAC01.local")
    put_identity(root, pki["good"])
    put_certificate(root, pki["issuing"])
    put_certificate(root, pki["root"])
    root.write("/Library/Logs/1E.Client.log", (FIXTURES / "1E.Client.log").read_bytes())
    root.write("/Library/Logs/1E.Client.Daemon.log", (FIXTURES / "1E.Client.Daemon.log").read_bytes())


def doctor(root: MacRoot, *args: str):
    return root.run([DOCTOR, *args])


def check_all_modes(root: MacRoot) -> dict:
    """Runs the three modes, checks they agree, and returns the JSON document."""
    as_json = doctor(root, "--json")
    document = json.loads(as_json.stdout)
    ea = doctor(root, "--jamf-ea")
    human = doctor(root)
    assert EA_LINE.match(ea.stdout), ea.stdout
    expected_rc = 0 if document["healthy"] else 1
    assert (as_json.returncode, ea.returncode, human.returncode) == (expected_rc,) * 3
    if document["healthy"]:
        assert ea.stdout == "<result>healthy</result>\n"
        assert human.stdout.splitlines()[-1] == "healthy"
        assert document["reasons"] == []
    else:
        reasons = "; ".join(document["reasons"]).replace("<", "(").replace(">", ")")
        assert ea.stdout == f"<result>unhealthy: {reasons}</result>\n"
        assert human.stdout.splitlines()[-1] == f"unhealthy: {len(document['reasons'])} problem(s)"
    for check in document["checks"]:
        assert f"{check['name']}: {check['detail']}" in human.stdout
    assert [c["detail"] for c in document["checks"] if c["status"] == "fail"] == document["reasons"]
    return document


def status(document: dict, name: str) -> tuple[str, str]:
    (check,) = [c for c in document["checks"] if c["name"] == name]
    return check["status"], check["detail"]


def test_healthy(mac_root, pki):
    healthy_mac(mac_root, pki)
    document = check_all_modes(mac_root)
    assert document["healthy"] is True
    assert (document["fleet"], document["version"]) == ("acme-prod", "5.1.0.12-1")
    assert [c["name"] for c in document["checks"]] == [
        "daemon", "switch", "background-channel", "binary", "rosetta", "identity", "ca",
        "log:1E.Client.log", "log:1E.Client.Daemon.log"]
    assert status(document, "daemon") == ("ok", f"{LABEL} running (pid 1210)")
    assert status(document, "rosetta")[0] == "skip"  # Intel
    state, detail = status(document, "identity")
    assert state == "ok" and "MAC01.local" in detail and pki["good"].sha1() in detail
    assert status(document, "ca") == ("ok", "chain up to O = Acme, CN = Acme Root CA present")
    # the DEBUG line "0 errors reported" is not an error
    assert status(document, "log:1E.Client.log")[0] == "ok"


def test_daemon_not_loaded(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/state/loaded/{LABEL}").unlink()
    document = check_all_modes(mac_root)
    assert document["reasons"] == [f"daemon {LABEL} is not loaded (launchctl print exited 113)"]


def test_daemon_not_loaded_and_plist_missing(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/state/loaded/{LABEL}").unlink()
    mac_root.path(SAMPLE.daemon_plist).unlink()
    document = check_all_modes(mac_root)
    assert document["reasons"] == [f"daemon {LABEL} is not loaded and its plist {SAMPLE.daemon_plist} "
                                   "is missing (reinstall the 1E Client)"]

    healthy_mac(mac_root, pki)
    mac_root.daemon_loaded(LABEL, "waiting")
    document = check_all_modes(mac_root)
    assert document["reasons"] == [f"daemon {LABEL} is loaded but not running (state waiting)"]


def test_wrong_switch(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.write(SAMPLE.conf_path, GOOD_CONF.replace("tachyon.acme.local:4000", "old.acme.local:4000"))
    document = check_all_modes(mac_root)
    assert document["reasons"] == [
        f"Switch is 'old.acme.local:4000' in {SAMPLE.conf_path}, expected 'tachyon.acme.local:4000'"]


def test_settings_are_read_case_insensitively_and_missing_ones_fail(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.write(SAMPLE.conf_path, "SWITCH = tachyon.acme.local:4000\n# BackgroundChannelUrl=x\n")
    document = check_all_modes(mac_root)
    assert status(document, "switch")[0] == "ok"
    assert document["reasons"] == [f"BackgroundChannelUrl is not set in {SAMPLE.conf_path} "
                                   "(expected https://tachyon.acme.local/Background)"]


def test_missing_identity(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/keychain/System.keychain/identities/{pki['good'].sha1()}.pem").unlink()
    put_certificate(mac_root, pki["good"])  # the certificate alone, without its key, is not enough
    document = check_all_modes(mac_root)
    assert document["reasons"] == [
        "no client identity (certificate and private key) in the System keychain"]
    assert status(document, "ca")[0] == "skip"


def test_identity_for_another_hostname(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/keychain/System.keychain/identities/{pki['good'].sha1()}.pem").unlink()
    put_identity(mac_root, pki["other-host"])
    document = check_all_modes(mac_root)
    assert document["reasons"] == [
        "no identity for this Mac (mac01) in the System keychain; found identities for: MAC02.local"]


def test_identity_matched_by_san(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/keychain/System.keychain/identities/{pki['good'].sha1()}.pem").unlink()
    put_identity(mac_root, pki["san-only"])
    document = check_all_modes(mac_root)
    assert document["healthy"] is True
    assert "Acme device 7" in status(document, "identity")[1]


def test_expiring_identity(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/keychain/System.keychain/identities/{pki['good'].sha1()}.pem").unlink()
    put_identity(mac_root, pki["expiring"])
    document = check_all_modes(mac_root)
    (reason,) = document["reasons"]
    assert reason.startswith("the identity for this Mac (mac01) expires within 30 days or has expired "
                             "(notAfter ")
    assert status(document, "ca")[0] == "ok"


def test_a_valid_identity_wins_over_an_expiring_one(mac_root, pki):
    healthy_mac(mac_root, pki)
    put_identity(mac_root, pki["expiring"])
    assert check_all_modes(mac_root)["healthy"] is True


def test_missing_issuing_ca(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/keychain/System.keychain/certs/{pki['issuing'].sha1()}.pem").unlink()
    put_certificate(mac_root, pki["stranger-root"])
    document = check_all_modes(mac_root)
    assert document["reasons"] == [
        "CA certificate O = Acme, CN = Acme Issuing CA is not in the System keychain "
        "(install the fleet trust profile)"]


def test_rosetta_missing_on_apple_silicon(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.set_state("arm64", "1")
    document = check_all_modes(mac_root)
    assert document["reasons"] == [
        "Rosetta 2 is not installed, so the x86_64-only 1E Client cannot run on this Apple silicon Mac "
        "(sudo softwareupdate --install-rosetta --agree-to-license)"]
    mac_root.write(ROSETTA, b"")
    document = check_all_modes(mac_root)
    assert document["healthy"] is True and status(document, "rosetta")[0] == "ok"
    assert ("-x86_64", "/usr/bin/true") in [c.args for c in mac_root.calls("arch")]


def test_native_client_needs_no_rosetta(mac_root, pki):
    ctx = replace(SAMPLE, needs_rosetta=False)
    healthy_mac(mac_root, pki, ctx)
    mac_root.set_state("arm64", "1")
    document = check_all_modes(mac_root)
    assert document["healthy"] is True
    assert status(document, "rosetta") == ("skip", "the 1E Client binary runs natively")


def test_missing_binary(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(SAMPLE.binary_path).unlink()
    document = check_all_modes(mac_root)
    assert document["reasons"] == [f"1E Client binary {SAMPLE.binary_path} is missing"]


def test_recent_log_errors_are_warnings(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.write("/Library/Logs/1E.Client.log", (FIXTURES / "1E.Client-errors.log").read_bytes())
    document = check_all_modes(mac_root)
    assert document["healthy"] is True
    state, detail = status(document, "log:1E.Client.log")
    assert state == "warn"
    assert detail.startswith("2 error lines in the last 500 lines of /Library/Logs/1E.Client.log; latest: ")
    assert detail.endswith("ERROR - Failed to connect to Switch tachyon.acme.local:4000: certificate verify failed")


def test_many_problems_make_one_ea_line(mac_root, pki):
    healthy_mac(mac_root, pki)
    mac_root.path(f"/stubs/state/loaded/{LABEL}").unlink()
    mac_root.write(SAMPLE.conf_path, "Switch=<wrong>\n")
    mac_root.set_state("arm64", "1")
    document = check_all_modes(mac_root)
    assert len(document["reasons"]) == 4
    ea = doctor(mac_root, "--jamf-ea").stdout
    assert ea.count("\n") == 1 and "(wrong)" in ea and "<wrong>" not in ea


def test_usage_and_configuration_errors(mac_root, pki):
    healthy_mac(mac_root, pki)
    bad = doctor(mac_root, "--bogus")
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr
    mac_root.path(f"{SAMPLE.support_dir}/doctor.conf").unlink()
    missing = doctor(mac_root, "--jamf-ea")
    assert missing.returncode == 2
    assert EA_LINE.match(missing.stdout) and "misconfigured" in missing.stdout
    assert doctor(mac_root, "--json").returncode == 2
    mac_root.write("/private/tmp/other.conf", (mac_root.path(f"{SAMPLE.support_dir}/fleet.conf")).read_text())
    assert doctor(mac_root, "--conf", "/private/tmp/other.conf").returncode == 2  # no label/binary/conf
    helped = doctor(mac_root, "--help")
    assert helped.returncode == 0 and "Exit status: 0 healthy; 1 unhealthy; 2 usage" in helped.stdout


def test_doctor_leaves_no_temporary_files(mac_root, pki):
    healthy_mac(mac_root, pki)
    before = sorted(p.name for p in mac_root.path("/tmp").iterdir())
    check_all_modes(mac_root)
    assert sorted(p.name for p in mac_root.path("/tmp").iterdir()) == before
