"""`fleetpkg enroll` end to end: the CLI in a subprocess against the real scepserver (its own CA
in tmp_path, 127.0.0.1, a challenge). Existing certificates are made with openssl from that CA's
key; every written .pfx is opened with `openssl pkcs12` and judged by `fleetpkg check`; what
reached the server is read from its depot and its log."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, require_tool
from tests.enroll.conftest import CHALLENGE, ScepServer
from tests.fleetfactory import PASSWORD, vendor_standin

WRONG = "Wr0ng-distinctive-Challenge-99"
ROW_PASSWORD = "R0w-distinctive-pfx-Passw0rd?"
TEMPLATE_RULES = ["key-usage", "crl-http"]  # what scepserver's issuing template lacks

FLEET = """\
[fleet]
name = "acme-scep"
organization = "ACME Corp"
identifier = "com.acme.scep"

[vendor]
package = "vendor/1e.client-macOS_v5.1.0.12.pkg"

[client]
Switch = "tachyon.acme.local:4000"
BackgroundChannelUrl = "https://tachyon.acme.local/Background"

[trust]
certificates = ["pki/scep-ca.pem"]

[devices]
inventory = "devices.csv"
password_env = "FLEET_PFX_PASSWORD"

[enroll]
scep_url = "{url}"
ca_fingerprint = "{fingerprint}"
{challenge}
subject = {{ O = "ACME Corp", OU = "Macs" }}
"""


def make_fleet(root: Path, server: ScepServer, rows: list[str], *,
               challenge: str = 'challenge_env = "SCEP_CHALLENGE"', fingerprint: str | None = None) -> Path:
    (root / "vendor").mkdir(parents=True, exist_ok=True)
    (root / "vendor/1e.client-macOS_v5.1.0.12.pkg").write_bytes(vendor_standin().read_bytes())
    (root / "pki").mkdir(exist_ok=True)
    (root / "pki/scep-ca.pem").write_bytes(server.ca_pem.read_bytes())
    (root / "pfx").mkdir(exist_ok=True)
    (root / "devices.csv").write_text("hostname,pfx,password_env\n" + "".join(r + "\n" for r in rows))
    toml = root / "fleet.toml"
    toml.write_text(FLEET.format(url=server.url, fingerprint=fingerprint or server.fingerprint,
                                 challenge=challenge))
    return toml


def openssl_pfx(server: ScepServer, path: Path, hostname: str, *, days: int,
                password: str = PASSWORD) -> bytes:
    """A .pfx whose certificate passes every rule, issued with openssl from the server's CA key
    (scepserver stores it encrypted under an empty password)."""
    openssl = require_tool("openssl")
    work = path.parent / f".{hostname}-work"
    work.mkdir()
    ext = work / "ext.cnf"
    ext.write_text("keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
                   f"subjectAltName=DNS:{hostname}\n"
                   "crlDistributionPoints=URI:http://pki.acme.local/scep-ca.crl\n")
    run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(work / "k.pem"),
        "-subj", f"/O=ACME Corp/CN={hostname}", "-out", str(work / "r.csr"))
    run("x509", "-req", "-in", str(work / "r.csr"), "-CA", str(server.ca_pem), "-CAkey",
        str(server.depot / "ca.key"), "-passin", "pass:", "-set_serial", str(abs(hash(hostname)) % 10**9 + 1000),
        "-days", str(days), "-sha256", "-extfile", str(ext), "-out", str(work / "c.pem"))
    subprocess.run([openssl, "pkcs12", "-export", "-inkey", str(work / "k.pem"), "-in",
                    str(work / "c.pem"), "-certfile", str(server.ca_pem), "-passout", "env:PFXPW",
                    "-out", str(path)], check=True, capture_output=True, timeout=60,
                   env=dict(os.environ, PFXPW=password))
    return path.read_bytes()


def enroll(toml: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO), FLEET_PFX_PASSWORD=PASSWORD,
                ROW_PFX_PASSWORD=ROW_PASSWORD, SCEP_CHALLENGE=CHALLENGE)
    full.update(env or {})
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "builder.cli", *args, str(toml)], cwd=toml.parent,
                          env=full, capture_output=True, text=True, timeout=300)


def assert_no_secret(r: subprocess.CompletedProcess) -> None:
    for secret in (PASSWORD, ROW_PASSWORD, CHALLENGE, WRONG):
        assert secret not in r.stdout and secret not in r.stderr


def devices(r: subprocess.CompletedProcess) -> dict[str, dict]:
    return {d["hostname"]: d for d in json.loads(r.stdout)["devices"]}


def pfx_subject(path: Path, password: str = PASSWORD) -> str:
    """The certificate's subject as `openssl pkcs12` reads it (an independent reader)."""
    r = subprocess.run([require_tool("openssl"), "pkcs12", "-in", str(path), "-nokeys", "-clcerts",
                        "-passin", "env:PFXPW"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PFXPW=password))
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.startswith("subject=")][0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_enrols_missing_keeps_valid_and_check_agrees(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac01,pfx/mac01.pfx,", "Mac02.acme.local,pfx/Mac02.pfx,ROW_PFX_PASSWORD",
                                          "mac03,pfx/mac03.pfx,"])
    valid = openssl_pfx(scep_server, root / "pfx/mac03.pfx", "mac03", days=200)

    r = enroll(toml, "enroll", "--json")
    assert_no_secret(r)
    assert r.returncode == 1, r.stderr  # the new certificates fail the template's two rules
    doc = json.loads(r.stdout)
    assert doc["summary"] == {"enrolled": 2, "renewed": 0, "kept": 1, "failed": 0}
    got = devices(r)
    assert got["mac03"]["action"] == "kept" and got["mac03"]["findings"] == []
    for host in ("mac01", "Mac02.acme.local"):
        assert got[host]["action"] == "enrolled" and got[host]["reason"].startswith("no .pfx yet: issued by")
        assert [f["rule"] for f in got[host]["findings"]] == TEMPLATE_RULES
    assert [(t["rule"], t["devices"]) for t in doc["template"]] == [
        (rule, ["mac01", "Mac02.acme.local"]) for rule in TEMPLATE_RULES]
    assert "Key Usage" in doc["template"][0]["fix"] and "CRL Distribution Point" in doc["template"][1]["fix"]
    # written where the inventory says, 0600, under each device's own password source
    assert mode(root / "pfx/mac01.pfx") == 0o600 and mode(root / "pfx/Mac02.pfx") == 0o600
    assert pfx_subject(root / "pfx/mac01.pfx") == "subject=O = ACME Corp, OU = Macs, CN = mac01"
    assert pfx_subject(root / "pfx/Mac02.pfx", ROW_PASSWORD).endswith("CN = Mac02.acme.local")
    assert (root / "pfx/mac03.pfx").read_bytes() == valid
    assert sorted(p.name for p in (root / "pfx").iterdir()) == [".mac03-work", "Mac02.pfx", "mac01.pfx", "mac03.pfx"]
    assert scep_server.pki_requests() == ["PKCSReq (19)"] * 2
    assert sorted(scep_server.issued()) == ["/O=ACME Corp/OU=Macs/CN=Mac02.acme.local",
                                            "/O=ACME Corp/OU=Macs/CN=mac01"]

    # `check` judges them: exactly the template's rules fail; hostname, EKU, chain, key, validity pass
    c = enroll(toml, "check", "--json")
    assert_no_secret(c)
    assert c.returncode == 1, c.stderr
    checked = devices(c)
    for host in ("mac01", "Mac02.acme.local"):
        assert [f["rule"] for f in checked[host]["findings"]] == TEMPLATE_RULES
    assert checked["mac03"]["ok"] is True and checked["mac03"]["findings"] == []

    # again right away: nothing enrolled, nothing sent, the template findings reported again
    again = enroll(toml, "enroll", "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["summary"] == {"enrolled": 0, "renewed": 0, "kept": 3, "failed": 0}
    assert scep_server.pki_requests() == ["PKCSReq (19)"] * 2
    text = enroll(toml, "enroll")
    assert text.returncode == 1 and text.stderr == ""
    assert "key-usage (2 devices): in the certificate template" in text.stdout
    assert "acme-scep: 0 enrolled, 0 renewed, 3 kept, 0 failed" in text.stdout
    assert_no_secret(text)


def test_expiring_renewed_with_renew_within(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac10,pfx/mac10.pfx,", "mac11,pfx/mac11.pfx,"])
    old = openssl_pfx(scep_server, root / "pfx/mac10.pfx", "mac10", days=60)
    other = openssl_pfx(scep_server, root / "pfx/mac11.pfx", "mac11", days=60)

    r = enroll(toml, "enroll", "--json")  # 60 days left, 30-day window: kept
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads(r.stdout)["summary"]["kept"] == 2

    r = enroll(toml, "enroll", "--json", "--renew-within", "90", "--only", "mac10")
    assert_no_secret(r)
    assert r.returncode == 1  # the renewed certificate has the template's findings
    doc = json.loads(r.stdout)
    assert [d["hostname"] for d in doc["devices"]] == ["mac10"]
    assert doc["summary"] == {"enrolled": 0, "renewed": 1, "kept": 0, "failed": 0}
    row = doc["devices"][0]
    assert row["reason"].startswith("expires on ") and "within the 90-day renewal window: issued by" in row["reason"]
    assert row["reason"].endswith("the old file is kept as mac10.pfx.previous")
    previous = root / "pfx/mac10.pfx.previous"
    assert previous.read_bytes() == old and mode(previous) == 0o600
    assert (root / "pfx/mac10.pfx").read_bytes() != old and mode(root / "pfx/mac10.pfx") == 0o600
    assert pfx_subject(root / "pfx/mac10.pfx") == "subject=O = ACME Corp, OU = Macs, CN = mac10"
    assert (root / "pfx/mac11.pfx").read_bytes() == other  # not selected
    assert not (root / "pfx/mac11.pfx.previous").exists()
    assert scep_server.issued() == ["/O=ACME Corp/OU=Macs/CN=mac10"]


def test_wrong_challenge_fails_that_device_and_writes_nothing(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac20,pfx/mac20.pfx,", "mac21,pfx/mac21.pfx,"])
    expiring = openssl_pfx(scep_server, root / "pfx/mac21.pfx", "mac21", days=5)
    r = enroll(toml, "enroll", "--json", env={"SCEP_CHALLENGE": WRONG})
    assert_no_secret(r)
    assert r.returncode == 1
    got = devices(r)
    for host in ("mac20", "mac21"):
        assert got[host]["action"] == "failed"
        assert got[host]["reason"] == ("the CA refused the request: badRequest (a wrong or already used "
                                       "challenge password, a subject its template does not allow, or a "
                                       "certificate for this name it will not renew yet)")
    assert not (root / "pfx/mac20.pfx").exists()
    assert (root / "pfx/mac21.pfx").read_bytes() == expiring and not (root / "pfx/mac21.pfx.previous").exists()
    assert sorted(p.name for p in (root / "pfx").iterdir()) == [".mac21-work", "mac21.pfx"]  # no temp files
    assert scep_server.issued() == []


STOPPER = """\
import os, signal, socket, sys, time
count_file, pid, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(n))
if n == 3:  # the third request: stop the server first, and wait until it no longer listens
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            break
        time.sleep(0.05)
print(os.environ["STOPPER_CHALLENGE"])
"""


def test_server_stopped_mid_run(tmp_path, scep_server):
    """A challenge_command (one fresh challenge per request) that stops the server before the
    third request: two devices enrolled, the others failed by name, their files untouched."""
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "stopper.py").write_text(STOPPER)
    command = json.dumps([sys.executable, "stopper.py", "calls.txt", str(scep_server.proc.pid),
                          str(scep_server.port)])
    hosts = ["mac30", "mac31", "mac32", "mac33", "mac34"]
    toml = make_fleet(root, scep_server, [f"{h},pfx/{h}.pfx," for h in hosts],
                      challenge=f"challenge_command = {command}")
    old = openssl_pfx(scep_server, root / "pfx/mac33.pfx", "mac33", days=3)
    r = enroll(toml, "enroll", "--json", "--jobs", "1", env={"STOPPER_CHALLENGE": CHALLENGE})
    assert_no_secret(r)
    assert r.returncode == 1, r.stderr
    got = devices(r)
    assert [got[h]["action"] for h in hosts] == ["enrolled", "enrolled", "failed", "failed", "failed"]
    for h in hosts[2:]:
        assert got[h]["reason"].startswith(f"PKIOperation {scep_server.url}: cannot reach the server (")
    assert (root / "calls.txt").read_text() == "5"  # one fresh challenge per request
    assert pfx_subject(root / "pfx/mac30.pfx").endswith("CN = mac30")
    assert pfx_subject(root / "pfx/mac31.pfx").endswith("CN = mac31")
    assert not (root / "pfx/mac32.pfx").exists() and not (root / "pfx/mac34.pfx").exists()
    assert (root / "pfx/mac33.pfx").read_bytes() == old and not (root / "pfx/mac33.pfx.previous").exists()
    assert len(scep_server.issued()) == 2


def test_fingerprint_mismatch_stops_before_any_request(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    wrong = "AB:" * 31 + "CD"
    toml = make_fleet(root, scep_server, ["mac40,pfx/mac40.pfx,"], fingerprint=wrong)
    r = enroll(toml, "enroll", "--json")
    assert_no_secret(r)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(f"fleetpkg: error: GetCACert {scep_server.url}: no certificate from "
                               "GetCACert matches [enroll] ca_fingerprint " + "ab" * 31 + "cd")
    assert scep_server.fingerprint in lines[0]
    assert scep_server.operations() == ["GetCACaps", "GetCACert"]  # nothing carrying a key or challenge
    assert scep_server.pki_requests() == [] and scep_server.issued() == []
    assert not (root / "pfx/mac40.pfx").exists()


def test_dry_run_sends_and_writes_nothing(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac50,pfx/mac50.pfx,", "mac51,pfx/mac51.pfx,"])
    old = openssl_pfx(scep_server, root / "pfx/mac51.pfx", "mac51", days=10)
    r = enroll(toml, "enroll", "--json", "--dry-run")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dry_run"] is True
    assert doc["summary"] == {"enrolled": 1, "renewed": 1, "kept": 0, "failed": 0}
    got = devices(r)
    assert got["mac50"]["reason"] == "dry run: would enrol: no .pfx yet"
    assert got["mac51"]["reason"].startswith("dry run: would renew: expires on ")
    assert scep_server.operations() == ["GetCACaps", "GetCACert"] and scep_server.issued() == []
    assert not (root / "pfx/mac50.pfx").exists() and (root / "pfx/mac51.pfx").read_bytes() == old


def test_unreachable_ca_and_unset_secrets_stop_the_run(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac60,pfx/mac60.pfx,", "mac61,pfx/mac61.pfx,ROW_PFX_PASSWORD"])
    r = enroll(toml, "enroll", env={"FLEET_PFX_PASSWORD": None})
    assert r.returncode == 2 and r.stderr.startswith("fleetpkg: error: fleet.toml [devices]: environment "
                                                     "variable FLEET_PFX_PASSWORD is not set")
    r = enroll(toml, "enroll", env={"SCEP_CHALLENGE": None})
    assert r.returncode == 2 and "environment variable SCEP_CHALLENGE (the SCEP challenge) is not set" in r.stderr
    # a device's own source unset: that device fails, the other is enrolled
    r = enroll(toml, "enroll", "--json", env={"ROW_PFX_PASSWORD": None})
    got = devices(r)
    assert got["mac61"]["action"] == "failed"
    assert got["mac61"]["reason"] == ("environment variable ROW_PFX_PASSWORD is not set (export "
                                      "ROW_PFX_PASSWORD=... before running, or pass --ask-password)")
    assert got["mac60"]["action"] == "enrolled"
    scep_server.stop()
    (root / "pfx/mac60.pfx").unlink()
    r = enroll(toml, "enroll")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"fleetpkg: error: GetCACaps {scep_server.url}: cannot reach the server (")
    assert_no_secret(r)


def test_only_unknown_host_is_a_usage_error(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac70,pfx/mac70.pfx,"])
    r = enroll(toml, "enroll", "--only", "mac07")
    assert r.returncode == 2
    assert r.stderr == "fleetpkg: error: --only mac07: no such device in the inventory (did you mean mac70?)\n"
    assert scep_server.operations() == []



def test_missing_pfx_folder_stops_before_any_request(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    toml = make_fleet(root, scep_server, ["mac71,nowhere/mac71.pfx,"])
    r = enroll(toml, "enroll")
    assert r.returncode == 2
    assert r.stderr.startswith("fleetpkg: error: ") and "no such folder for mac71.pfx" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not (root / "nowhere").exists()
    assert scep_server.operations() == []


ARGV_SNAPSHOT = """\
import os, sys
seen = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            seen.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" "))
        except OSError:
            pass
open(sys.argv[1], "ab").write(b"\\n".join(seen) + b"\\n")
print(os.environ["SNAPSHOT_CHALLENGE"])
"""


def test_secrets_stay_out_of_argv_logs_json_and_files(tmp_path, scep_server):
    """While requests run, no process has the challenge or a .pfx password in its argv; neither
    reaches stdout, stderr, JSON, the server's log or any file but the encrypted .pfx."""
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "snapshot.py").write_text(ARGV_SNAPSHOT)
    command = json.dumps([sys.executable, "snapshot.py", "argv.txt"])
    toml = make_fleet(root, scep_server, ["mac80,pfx/mac80.pfx,", "mac81,pfx/mac81.pfx,ROW_PFX_PASSWORD"],
                      challenge=f"challenge_command = {command}")
    for args in (["--json"], ["--json", "--renew-within", "3650"], []):
        r = enroll(toml, "enroll", *args, env={"SNAPSHOT_CHALLENGE": CHALLENGE})
        assert r.returncode == 1 and r.stderr == "", r.stderr
        assert_no_secret(r)
    # the test's scepserver has its challenge in its own argv (-challenge): leave it out
    snapshot = b"\n".join(line for line in (root / "argv.txt").read_bytes().splitlines()
                           if str(scep_server.depot).encode() not in line)
    assert b"builder.cli enroll" in snapshot  # the snapshot saw fleetpkg itself
    for secret in (PASSWORD, ROW_PASSWORD, CHALLENGE):
        assert secret.encode() not in snapshot
        assert secret.encode() not in scep_server.log.read_bytes()
        for path in root.rglob("*"):
            if path.is_file() and path.name not in ("snapshot.py", "argv.txt"):
                assert secret.encode() not in path.read_bytes(), path
    assert sorted(p.name for p in (root / "pfx").iterdir()) == [
        "mac80.pfx", "mac80.pfx.previous", "mac81.pfx", "mac81.pfx.previous"]
    assert "has_challenge=true" in scep_server.log.read_text()


def test_progress_bar_on_a_terminal(tmp_path, scep_server):
    from tests.cli.test_progress import run_on_pty

    root = tmp_path / "fleet"
    root.mkdir()
    (root / "challenge.txt").write_text(CHALLENGE + "\n")
    toml = make_fleet(root, scep_server, [f"mac9{i},pfx/mac9{i}.pfx," for i in range(3)],
                      challenge='challenge_file = "challenge.txt"')
    rc, out, err = run_on_pty("enroll", toml.name, cwd=root)
    assert rc == 1, err
    assert err.split("\r")[-1].startswith("[" + "#" * 30 + "] 3/3 devices ")
    assert "\x1b" not in out and "acme-scep: 3 enrolled, 0 renewed, 0 kept, 0 failed" in out
    assert CHALLENGE not in out + err and PASSWORD not in out + err
    rc, out, err = run_on_pty("enroll", toml.name, "--json", cwd=root)
    assert rc == 1 and err == "" and json.loads(out)["summary"]["kept"] == 3


INTERRUPTER = """\
import os, signal, sys
count_file = sys.argv[1]
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
open(count_file, "w").write(str(n))
if n == 2:
    os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C to fleetpkg while a request is under way
print(os.environ["INTERRUPT_CHALLENGE"])
"""


def test_interrupted_run_leaves_every_pfx_old_or_new(tmp_path, scep_server):
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "interrupt.py").write_text(INTERRUPTER)
    command = json.dumps([sys.executable, "interrupt.py", "calls.txt"])
    hosts = ["mac90", "mac91", "mac92", "mac93"]
    toml = make_fleet(root, scep_server, [f"{h},pfx/{h}.pfx," for h in hosts],
                      challenge=f"challenge_command = {command}")
    old = {h: openssl_pfx(scep_server, root / f"pfx/{h}.pfx", h, days=2) for h in ("mac91", "mac92")}
    r = enroll(toml, "enroll", "--jobs", "1", env={"INTERRUPT_CHALLENGE": CHALLENGE})
    assert r.returncode == 130 and r.stderr.strip() == "fleetpkg: aborted", r.stderr  # click: Ctrl-C
    assert_no_secret(r)
    assert (root / "calls.txt").read_text() == "2"  # no request started after the interrupt
    for h in hosts:
        path = root / f"pfx/{h}.pfx"
        if h in old and path.read_bytes() == old[h]:
            continue
        if path.exists():  # otherwise: complete, readable, for this Mac
            assert pfx_subject(path).endswith(f"CN = {h}")
    assert pfx_subject(root / "pfx/mac90.pfx").endswith("CN = mac90")  # finished before the interrupt
    assert (root / "pfx/mac92.pfx").read_bytes() == old["mac92"] and not (root / "pfx/mac93.pfx").exists()
    assert not [p for p in (root / "pfx").iterdir() if p.name.endswith(".tmp")]
