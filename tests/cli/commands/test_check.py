"""`fleetpkg check` end to end: real .pfx files (made with cryptography), the real builder.certs,
the CLI in a subprocess. Exit codes 0/1/2, one-line errors, exact --json, no password leaks."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import FIXTURES, REPO
from builder.certs import RULES
from tests.fleetfactory import (BAD_PFX, NOW, OTHER_PASSWORD, PASSWORD, make_ca, make_device, make_fleet,
                                write_bad_pfx, write_pfx)

AT = NOW.strftime("%Y-%m-%d")
WRONG = "Wr0ng-distinctive-Guess#42"


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO), FLEET_PFX_PASSWORD=PASSWORD)
    full.pop("SOURCE_DATE_EPOCH", None)
    full.update(env or {})
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


def assert_no_secret(r: subprocess.CompletedProcess, *secrets: str) -> None:
    for s in (PASSWORD, WRONG, OTHER_PASSWORD, *secrets):
        assert s not in r.stdout and s not in r.stderr


def assert_one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fleetpkg: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert_no_secret(r)
    return lines[0]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Six devices: two pass, one warns (expires soon), three fail different rules."""
    root = tmp_path_factory.mktemp("mixed")
    hosts = ["MAC01.local", "mac02", "mac03-expiring", "mac04-wrongname", "mac05-expired",
             "mac06-foreign"]
    f = make_fleet(root, hosts)
    key, cert = make_device(f.ca, "mac03-expiring", days=11)  # NOW is 10 days before expiry
    write_pfx(root / "pfx/mac03-expiring.pfx", key, cert)
    key, cert = make_device(f.ca, "MAC04-WRONGNAME")  # case matters
    write_pfx(root / "pfx/mac04-wrongname.pfx", key, cert)
    key, cert = make_device(f.ca, "mac05-expired", not_before=NOW - dt.timedelta(days=400))
    write_pfx(root / "pfx/mac05-expired.pfx", key, cert)
    other = make_ca("Some Other CA")
    key, cert = make_device(other, "mac06-foreign")
    write_pfx(root / "pfx/mac06-foreign.pfx", key, cert)
    return f


EXPECTED_RULES = {
    "MAC01.local": (True, set(), set()),
    "mac02": (True, set(), set()),
    "mac03-expiring": (True, set(), {"validity"}),
    "mac04-wrongname": (False, {"subject-hostname"}, set()),
    "mac05-expired": (False, {"validity"}, set()),
    "mac06-foreign": (False, {"chain"}, set()),
}


def test_all_pass_exit_0_table(tmp_path):
    f = make_fleet(tmp_path)
    r = run("check", "fleet.toml", "--at", AT, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["device", "status", "failed", "rules", "expiry"]
    expiry = (NOW - dt.timedelta(days=1) + dt.timedelta(days=365)).date().isoformat()
    assert lines[2].split() == ["MAC01.local", "ok", "-", expiry]
    assert lines[3].split() == ["mac02", "ok", "-", expiry]
    assert lines[-1] == (f"acme-test: 2 devices checked at {AT} 00:00:00Z: 2 ok, 0 failed, "
                         "0 warnings")
    assert_no_secret(r)
    assert f.devices == ["MAC01.local", "mac02"]


def test_default_at_is_now(tmp_path):
    make_fleet(tmp_path, not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    r = run("check", "fleet.toml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"] == {"devices": 2, "ok": 2, "failed": 0, "warnings": 0}


def test_json_shape_exact_and_findings(mixed):
    r = run("check", str(mixed.config), "--json", "--at", AT, "--jobs", "1", cwd=mixed.root)
    assert r.returncode == 1, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert set(doc) == {"fleet", "devices", "summary"}
    assert doc["fleet"] == "acme-test"
    assert [d["hostname"] for d in doc["devices"]] == list(EXPECTED_RULES)  # inventory order
    warnings = 0
    for d in doc["devices"]:
        assert set(d) == {"hostname", "ok", "not_after", "findings"}
        ok, errors, warns = EXPECTED_RULES[d["hostname"]]
        assert d["ok"] is ok, d
        for finding in d["findings"]:
            assert set(finding) == {"rule", "severity", "message"}
            assert finding["severity"] in ("error", "warning")
            assert isinstance(finding["message"], str) and finding["message"]
        assert {x["rule"] for x in d["findings"] if x["severity"] == "error"} == errors, d
        assert {x["rule"] for x in d["findings"] if x["severity"] == "warning"} == warns, d
        warnings += len([x for x in d["findings"] if x["severity"] == "warning"])
        parsed = dt.datetime.strptime(d["not_after"], "%Y-%m-%dT%H:%M:%SZ")
        assert parsed.year >= 2024
    expiring = doc["devices"][2]
    assert expiring["not_after"] == (NOW - dt.timedelta(days=1) + dt.timedelta(days=11)
                                     ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "MAC04-WRONGNAME" in doc["devices"][3]["findings"][0]["message"]  # says what it holds
    assert doc["summary"] == {"devices": 6, "ok": 3, "failed": 3, "warnings": warnings}
    assert warnings >= 1
    assert r.stdout == json.dumps(doc, indent=2, sort_keys=True) + "\n"  # nothing else on stdout
    assert_no_secret(r)


def test_table_marks_fail_and_warn(mixed):
    r = run("check", str(mixed.config), "--at", AT, "--jobs", "1", cwd=mixed.root)
    assert r.returncode == 1
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[2:8]}
    assert rows["MAC01.local"].split()[1] == "ok"
    assert rows["mac03-expiring"].split()[1:4] == ["warn", "warn:", "validity"]
    assert rows["mac04-wrongname"].split()[1:3] == ["FAIL", "subject-hostname"]
    assert rows["mac05-expired"].split()[1:3] == ["FAIL", "validity"]
    assert rows["mac06-foreign"].split()[1:3] == ["FAIL", "chain"]
    assert "how to fix:" in r.stdout
    assert r.stdout.rstrip().endswith("6 devices checked at 2025-06-01 00:00:00Z: 3 ok, 3 failed, "
                                      f"{r.stdout.count(' warning ')} warnings")
    assert_no_secret(r)


def test_jobs_1_and_2_identical(mixed):
    one = run("check", str(mixed.config), "--json", "--at", AT, "--jobs", "1", cwd=mixed.root)
    two = run("check", str(mixed.config), "--json", "--at", AT, "--jobs", "2", cwd=mixed.root)
    default = run("check", str(mixed.config), "--json", "--at", AT, cwd=mixed.root)
    assert one.returncode == two.returncode == default.returncode == 1
    assert one.stdout == two.stdout == default.stdout
    assert two.stderr == ""


def test_at_moves_validity(mixed):
    later = (NOW + dt.timedelta(days=3 * 365)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    r = run("check", str(mixed.config), "--json", "--at", later, "--jobs", "1", cwd=mixed.root)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert all("validity" in {x["rule"] for x in d["findings"]} for d in doc["devices"])
    assert doc["summary"]["ok"] == 0


# --- a bad .pfx is its device's finding: every device reported, exit 1 ------------------------

BROKEN_GOOD = ["mac01", "mac02", "mac03"]


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Three good devices around one device per way a .pfx export breaks (BAD_PFX)."""
    root = tmp_path_factory.mktemp("broken")
    kinds = list(BAD_PFX)
    hosts = ["mac01", *[f"mac-{k}" for k in kinds[:4]], "mac02", *[f"mac-{k}" for k in kinds[4:]], "mac03"]
    f = make_fleet(root, hosts)
    for kind in kinds:
        write_bad_pfx(root / "pfx" / f"mac-{kind}.pfx", kind, f.ca, f"mac-{kind}")
    return f


def broken_rule(hostname: str) -> str | None:
    return BAD_PFX.get(hostname.removeprefix("mac-")) if hostname.startswith("mac-") else None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_pfx_files_are_findings_json(broken, jobs):
    r = run("check", "fleet.toml", "--json", "--at", AT, "--jobs", jobs, cwd=broken.root)
    assert r.returncode == 1, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert [d["hostname"] for d in doc["devices"]] == broken.devices  # every device, inventory order
    for d in doc["devices"]:
        rule = broken_rule(d["hostname"])
        if rule is None:
            assert d["ok"] is True and d["findings"] == [] and d["not_after"], d
            continue
        assert d["ok"] is False and d["not_after"] is None, d
        (finding,) = d["findings"]
        assert (finding["rule"], finding["severity"]) == (rule, "error"), d
        assert finding["message"].startswith(f"{broken.root / 'pfx' / d['hostname']}.pfx: "), finding
        assert "\n" not in finding["message"]
    assert doc["summary"] == {"devices": 11, "ok": 3, "failed": 8, "warnings": 0}
    messages = {d["hostname"]: d["findings"][0]["message"] for d in doc["devices"] if d["findings"]}
    assert "contains no private key" in messages["mac-no-key"]
    assert "does not match any certificate" in messages["mac-other-key"]
    assert "contains no certificate" in messages["mac-no-certificate"]
    assert "wrong password" in messages["mac-wrong-password"]
    assert "not a valid PKCS#12 file" in messages["mac-truncated"] + messages["mac-random"]
    assert "is a folder" in messages["mac-folder"] and "no such file" in messages["mac-missing"]
    assert_no_secret(r)


def test_bad_pfx_files_are_findings_table_and_report(broken):
    report = broken.root / "readiness.html"
    r = run("check", "fleet.toml", "--at", AT, "--report", str(report), cwd=broken.root)
    assert r.returncode == 1, r.stderr
    assert r.stderr == f"report: {report}\n"
    lines = r.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:2 + len(broken.devices)]}
    assert list(rows) == broken.devices
    for host, cells in rows.items():
        rule = broken_rule(host)
        assert cells == (["ok", "-", cells[-1]] if rule is None else ["FAIL", rule, "-"]), (host, cells)
    start = lines.index(next(line for line in lines if line.split()[:3] == ["device", "rule", "severity"]))
    details = [line.split()[:3] for line in lines[start + 2:lines.index("how to fix:") - 1]]
    assert details == [[h, broken_rule(h), "error"] for h in broken.devices if broken_rule(h)]
    fixes = lines[lines.index("how to fix:") + 1:]
    for rule in dict.fromkeys(BAD_PFX.values()):
        assert f"  {rule}: {RULES[rule].fix}" in fixes
    assert lines[-1] == f"acme-test: 11 devices checked at {AT} 00:00:00Z: 3 ok, 8 failed, 0 warnings"
    page = report.read_text()
    for host in broken.devices:
        assert f">{host}<" in page
    counts = {rule: list(BAD_PFX.values()).count(rule) for rule in BAD_PFX.values()}
    for rule, n in counts.items():
        section = page[page.index(f'<div class="rule" id="rule-{rule}">'):]
        assert f"{n} device{'' if n == 1 else 's'} fail" in section[:section.index("</div>")], rule
    assert_no_secret(r)


def test_wrong_password_for_every_device_is_a_finding_each(tmp_path):
    f = make_fleet(tmp_path, ["mac01", "mac02", "mac03"])
    r = run("check", "fleet.toml", "--json", "--at", AT, "--jobs", "2", cwd=tmp_path,
            env={"FLEET_PFX_PASSWORD": WRONG})
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [(d["hostname"], [x["rule"] for x in d["findings"]]) for d in doc["devices"]] == [
        (h, ["pfx-password"]) for h in f.devices]
    r = run("--debug", "check", "fleet.toml", "--at", AT, cwd=tmp_path, env={"FLEET_PFX_PASSWORD": WRONG})
    assert r.returncode == 1 and r.stdout.count("pfx-password") == 7  # 3 status rows, 3 findings, 1 fix
    assert_no_secret(r)  # not even with --debug


def test_unset_per_device_password_env_stops_the_run(tmp_path):
    """A password source that is not set at all is not a finding: the run stops, naming the
    device and the variable."""
    f = make_fleet(tmp_path, ["mac01", "mac02"])
    f.csv.write_text("hostname,pfx,password_env\nmac01,pfx/mac01.pfx,\nmac02,pfx/mac02.pfx,MAC02_PFX_PW\n")
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path, env={"MAC02_PFX_PW": None}),
                          "device mac02 (devices.csv:3)", "MAC02_PFX_PW is not set")


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01", "01/06/2025", ""])
def test_bad_at(tmp_path, bad):
    make_fleet(tmp_path)
    assert_one_error_line(run("check", "fleet.toml", "--at", bad, cwd=tmp_path), "--at")


def test_bad_jobs_is_usage_error(tmp_path):
    make_fleet(tmp_path)
    r = run("check", "fleet.toml", "--jobs", "0", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# --- input errors: one line, exit 2 -----------------------------------------------------------

def test_config_typo(tmp_path):
    f = make_fleet(tmp_path)
    f.config.write_text(f.config.read_text().replace("[trust]\ncertificates", "[trust]\ncertifcates"))
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path),
                          "fleet.toml: [trust]", "'certifcates'", "'certificates'")


def test_bad_csv_row(tmp_path):
    f = make_fleet(tmp_path)
    f.csv.write_text("hostname,pfx\nMAC01.local,pfx/MAC01.local.pfx\nmac 02,pfx/mac02.pfx\n")
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path),
                          "devices.csv:3", "'mac 02'")


def test_duplicate_hostname(tmp_path):
    f = make_fleet(tmp_path)
    f.csv.write_text("hostname,pfx\nMAC01.local,pfx/MAC01.local.pfx\nmac01.LOCAL,pfx/mac02.pfx\n")
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path),
                          "devices.csv:3", "duplicate hostname", "line 2")


def test_env_variable_missing(tmp_path):
    make_fleet(tmp_path)
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path,
                              env={"FLEET_PFX_PASSWORD": None}),
                          "device MAC01.local (devices.csv:2)", "FLEET_PFX_PASSWORD is not set")


def test_bad_ca_file(tmp_path):
    make_fleet(tmp_path)
    (tmp_path / "pki/root.pem").write_text("not a certificate\n")
    assert_one_error_line(run("check", "fleet.toml", "--at", AT, cwd=tmp_path), "root.pem")


def test_missing_config(tmp_path):
    assert_one_error_line(run("check", "nope.toml", cwd=tmp_path), "nope.toml: no such file")


def test_per_device_password_file_and_env(tmp_path):
    f = make_fleet(tmp_path, ["mac01", "mac02"])
    key, cert = make_device(f.ca, "mac02")
    write_pfx(tmp_path / "pfx/mac02.pfx", key, cert, password="file-pw-3141")
    (tmp_path / "pw.txt").write_text("file-pw-3141\n")
    f.csv.write_text("hostname,pfx,password_file\nmac01,pfx/mac01.pfx,\nmac02,pfx/mac02.pfx,pw.txt\n")
    r = run("check", "fleet.toml", "--json", "--at", AT, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["ok"] == 2
    assert_no_secret(r, "file-pw-3141")


def test_ask_password_prompts_once(tmp_path, monkeypatch):
    from builder.cli.commands.check import command

    f = make_fleet(tmp_path)
    f.config.write_text(f.config.read_text().replace('password_env = "FLEET_PFX_PASSWORD"\n', ""))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(command, ["fleet.toml", "--json", "--at", AT, "--ask-password",
                                     "--jobs", "1"], input=PASSWORD + "\n",
                           standalone_mode=False)
    assert result.exception is None, result.output
    assert result.return_value == 0
    assert result.stderr.count("Password for") == 1  # one prompt for both devices, on stderr
    assert PASSWORD not in result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["ok"] == 2


def test_check_reads_the_vendor_package_first(tmp_path):
    make_fleet(tmp_path)
    ok = run("check", "fleet.toml", "--at", AT, cwd=tmp_path)
    assert "vendor: 1e.client-macOS_v5.1.0.12.pkg: com.1e.pkg.1E.Client 5.1.0.12 (x86_64; needs Rosetta 2)" \
        in ok.stdout
    vendor = tmp_path / "vendor" / "1e.client-macOS_v5.1.0.12.pkg"
    vendor.write_bytes(vendor.read_bytes()[:100])
    broken = run("check", "fleet.toml", "--at", AT, cwd=tmp_path)
    assert broken.returncode == 2
    assert broken.stderr.count("\n") == 1 and "1e.client-macOS_v5.1.0.12.pkg" in broken.stderr
    shutil.copyfile(FIXTURES / "pkg" / "macops-KeychainMinder-1.0.pkg", vendor)
    foreign = run("check", "fleet.toml", "--at", AT, cwd=tmp_path)
    assert foreign.returncode == 2 and "--allow-foreign-vendor" in foreign.stderr
    assert "Traceback" not in broken.stderr + foreign.stderr
