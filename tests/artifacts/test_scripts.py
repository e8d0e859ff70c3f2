"""builder/artifacts/scripts.py: rendering, shellcheck, and the generated scripts run for real (bash, BSD
awk) in an isolated root with stub macOS commands (tests/scripts/)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import ConfigError
from builder.artifacts.resources import payloads_dir
from builder.artifacts.scripts import (
    IDENTITY_PASSWORD_FILE,
    IdentityContext,
    render_identity_scripts,
    render_jamf_ea,
    render_wrapper_scripts,
    shquote,
    wrapper_payload_files,
)
from tests.conftest import require_tool
from tests.scripts.certs import make_ca, make_leaf, make_p12
from tests.scripts.installer import (
    HOSTILE,
    SAMPLE,
    SANDBOX,
    VENDOR_CONF,
    install,
    log_lines,
    write_receipts,
)
from tests.scripts.macroot import MacRoot, mac_root  # noqa: F401  (fixture)

LABEL = SAMPLE.daemon_label
ROSETTA = "/Library/Apple/usr/libexec/oah/libRosettaRuntime"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ fleetpkg\[acme-prod\] ")
# Upper-layer paths that change on every run by design: the stubs' records, the appended log,
# and Installer's scratch folder.
VOLATILE = ("stubs", "var/log/fleetpkg-acme-prod.log", "private/tmp", "tmp")

IDENTITY = IdentityContext(
    fleet="acme-prod", hostname="MAC01.local", binary_path=SAMPLE.binary_path,
    p12_name="MAC01.local.p12", ca_names=("acme-root.cer", "acme-issuing.cer"), label=LABEL,
)


def tools(root: MacRoot, tool: str) -> list[tuple[str, ...]]:
    return [call.args for call in root.calls(tool)]


# -- rendering -----------------------------------------------------------------------------------

def test_render_wrapper_scripts_returns_every_file_deterministically():
    first = render_wrapper_scripts(SAMPLE)
    assert sorted(first) == ["doctor.conf", "fleet.conf", "postinstall", "preinstall", "uninstall.sh"]
    assert first == render_wrapper_scripts(SAMPLE)
    for name in ("preinstall", "postinstall", "uninstall.sh"):
        assert first[name].startswith("#!/bin/bash\n")
        assert "\nset -u\n" in first[name]
        assert "{{" not in first[name] and "{%" not in first[name]
    assert first["fleet.conf"].splitlines()[-2:] == [
        "Switch=tachyon.acme.local:4000", "BackgroundChannelUrl=https://tachyon.acme.local/Background"]
    doctor_conf = dict(line.split("=", 1) for line in first["doctor.conf"].splitlines()
                       if not line.startswith("#"))
    assert doctor_conf == {
        "fleet": "acme-prod", "version": "5.1.0.12-1", "label": LABEL, "plist": SAMPLE.daemon_plist,
        "binary": SAMPLE.binary_path, "conf": SAMPLE.conf_path, "needs_rosetta": "1",
        "switch": "tachyon.acme.local:4000",
        "background_channel_url": "https://tachyon.acme.local/Background",
    }


def test_every_value_reaches_shell_single_quoted():
    scripts = render_wrapper_scripts(HOSTILE)
    for value in (HOSTILE.conf_path, HOSTILE.daemon_plist, HOSTILE.daemon_label):
        assert shquote(value) in scripts["postinstall"]
    assert shquote(HOSTILE.daemon_label) in scripts["uninstall.sh"]
    for receipt in HOSTILE.receipts:
        assert shquote(receipt) in scripts["uninstall.sh"]


SHELL_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                     max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["'", "$", "`", "\\", '"', " ", "*", "$(id)", "${x}", "!", "\n"]),
                          SHELL_TEXT), max_size=8).map("".join))
def test_shquote_round_trips_through_a_real_shell(value):
    out = subprocess.run(["bash", "-c", f"printf %s {shquote(value)}"], capture_output=True,
                         check=True).stdout
    assert out.decode() == value


@pytest.mark.parametrize("change, where", [
    ({"fleet": "Acme Prod"}, "fleet.name"),
    ({"conf_path": "relative/1E.Client.conf"}, "conf path"),
    ({"binary_path": "/Library/1E\n/x"}, "binary path"),
    ({"support_dir": "/Library/../etc"}, "support dir"),
    ({"daemon_label": "com.1e pkg"}, "daemon label"),
    ({"client_settings": (("Sw=itch", "x"),)}, "[client] Sw=itch"),
    ({"client_settings": (("Switch", "a\nLoggingLevel=debug"),)}, "[client] Switch"),
    ({"client_settings": (("#Switch", "x"),)}, "[client] #Switch"),
    ({"receipts": ()}, "receipts"),
])
def test_values_that_cannot_be_carried_are_refused(change, where):
    with pytest.raises(ConfigError) as info:
        render_wrapper_scripts(replace(SAMPLE, **change))
    assert info.value.where == where


@pytest.mark.parametrize("change", [
    {"p12_name": "../x.p12"}, {"ca_names": ("identity.pass",)}, {"hostname": ""},
    {"hostname": "mac\n01"}, {"binary_path": "1E.Client"}, {"ca_names": ("a.cer", "a.cer")},
])
def test_identity_values_that_cannot_be_carried_are_refused(change):
    with pytest.raises(ConfigError):
        render_identity_scripts(replace(IDENTITY, **change))


# Values as hostile as validation lets through, incl. the stencil's own hole markers.
STENCIL_TEXT = st.lists(st.one_of(st.sampled_from(["'", "$", "`", "\\", '"', " ", "\t", "$(id)", "''", "x'",
                                                   "\ue000", "\ue001", "\ue0000\ue001", "\ue0001\ue001"]),
                                  st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=4)),
                        min_size=1, max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(hostname=STENCIL_TEXT, p12_stem=STENCIL_TEXT, binary=STENCIL_TEXT, label=STENCIL_TEXT,
       fleet=st.sampled_from(["acme-prod", "f", "0-x"]),
       ca_names=st.lists(STENCIL_TEXT.map(lambda n: f"ca {n}.cer"), max_size=3, unique=True))
def test_identity_scripts_are_the_jinja_render(hostname, p12_stem, binary, label, fleet, ca_names):
    """Identity scripts are filled into a stencil rendered once per build; they must be the Jinja2
    render of the same context byte for byte, for any hostname the validation accepts."""
    from hypothesis import assume

    from builder.artifacts.scripts import _render_identity, validate_identity

    ctx = IdentityContext(fleet=fleet, hostname=hostname, binary_path="/" + binary.replace("/", "_"),
                          p12_name=f"{p12_stem.replace('/', '_')}.p12", ca_names=tuple(ca_names), label=label)
    try:
        validate_identity(ctx)
    except ConfigError:
        assume(False)
    assert render_identity_scripts(ctx) == _render_identity(ctx)


def test_identity_stencil_is_refused_when_it_cannot_reproduce_the_render():
    """A value of the build holding a hole marker would be filled as a hostname: the probe render
    catches it and every Mac renders with Jinja2 instead, still byte-identical."""
    from builder.artifacts.scripts import _identity_stencils, _render_identity
    from builder.artifacts.templating import Stencil, hole

    odd = replace(IDENTITY, binary_path=f"/opt/{hole(0)}/1E.Client")
    assert _identity_stencils(odd.fleet, odd.binary_path, odd.ca_names, odd.label) is None
    assert render_identity_scripts(odd) == _render_identity(odd)
    assert _identity_stencils(IDENTITY.fleet, IDENTITY.binary_path, IDENTITY.ca_names, IDENTITY.label) is not None
    # the ambiguity the probe guards against: a raw value between literal quotes reads as shquoted
    stencil = Stencil.from_rendered(f"a '{hole(0)}' b {hole(0)}", 1)
    assert stencil.holes == ((0, True), (0, False))
    assert stencil.fill(["it's"]) == "a 'it'\\''s' b it's"


def test_payload_files_and_modes():
    files = wrapper_payload_files(SAMPLE)
    assert [(f.path.rsplit("/", 1)[1], oct(f.mode)) for f in files] == [
        ("doctor", "0o755"), ("doctor.conf", "0o644"), ("fleet.conf", "0o644"),
        ("uninstall.sh", "0o755")]
    assert all(f.path.startswith(SAMPLE.support_dir + "/") for f in files)
    assert files[0].data == (payloads_dir() / "doctor").read_bytes()


# -- static checks ---------------------------------------------------------------------------------

def all_scripts() -> list[tuple[str, str]]:
    scripts = []
    for label, ctx in (("sample", SAMPLE), ("native", replace(SAMPLE, needs_rosetta=False)),
                       ("hostile", HOSTILE)):
        for name, text in render_wrapper_scripts(ctx).items():
            if not name.endswith(".conf"):
                scripts.append((f"{label}-{name}", text))
        scripts.append((f"{label}-jamf-ea", render_jamf_ea(ctx)))
    for label, ctx in (("identity", IDENTITY),
                       ("identity-hostile", replace(IDENTITY, hostname="Mac 'O\"1 $(x)",
                                                    binary_path=HOSTILE.binary_path,
                                                    p12_name="a b'c.p12", ca_names=()))):
        for name, text in render_identity_scripts(ctx).items():
            scripts.append((f"{label}-{name}", text))
    scripts.append(("doctor", (payloads_dir() / "doctor").read_text()))
    return scripts


@pytest.mark.parametrize("name, text", all_scripts(), ids=[n for n, _ in all_scripts()])
def test_shellcheck_reports_nothing(name, text, tmp_path):
    shellcheck = require_tool("shellcheck")
    script = tmp_path / name
    script.write_text(text)
    result = subprocess.run([shellcheck, "-s", "bash", "-S", "style", str(script)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr


# bash 3.2 (macOS /bin/bash) and BSD tools: constructs that work on Linux but not there.
NOT_ON_MACOS = {
    r"declare -A|local -A|typeset -A": "associative arrays (bash 4)",
    r"\$\{[A-Za-z_][A-Za-z0-9_]*(,,|\^\^|,|\^)\}": "case modification (bash 4)",
    r"\bmapfile\b|\breadarray\b": "mapfile (bash 4)",
    r"\|&": "|& (bash 4)",
    r"&>>": "&>> (bash 4)",
    r";;&|;&": "case fall-through (bash 4)",
    r"\bcoproc\b": "coproc (bash 4)",
    r"sed (-[a-zA-Z]*\s+)*-i(\s|$)|sed -i\s*'": "sed -i without a suffix (BSD sed needs one)",
    r"readlink -f": "readlink -f (GNU)",
    r"stat -c|stat --": "GNU stat",
    r"\bdate -I|\bdate --": "GNU date options",
    r"mktemp --|mktemp -t": "GNU mktemp options",
    r"grep -P|grep -[a-zA-Z]*P": "grep -P (GNU)",
    r"\bgawk\b|--re-interval|\bgensub\b|\bstrftime\b|\bsystime\b": "GNU awk only",
    r"\bsort -V\b|\bhead -c -|\btail --": "GNU sort/head/tail options",
    r"\bxargs -r\b|\bfind [^|]*-printf\b": "GNU xargs/find options",
    r"\buname -m\b": "uname -m (lies under Rosetta)",
}


@pytest.mark.parametrize("name, text", all_scripts(), ids=[n for n, _ in all_scripts()])
def test_no_bash4_or_gnu_only_constructs(name, text):
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for pattern, what in NOT_ON_MACOS.items():
        assert not re.search(pattern, code), f"{name} uses {what}"


# -- the configuration merge, property-tested against a model ----------------------------------------

def merge_awk_program() -> str:
    text = render_wrapper_scripts(SAMPLE)["postinstall"]
    return text.split("MERGE_AWK='", 1)[1].split("'\n", 1)[0]


def model_merge(vendor: str, local: str, fleet: str) -> str:
    """The merge rule written again in Python, line by line, from the issue's words."""
    def settings_of(text):
        found, order = {}, []
        for line in text.split("\n"):
            stripped = line.lstrip(" \t")
            if not stripped or stripped[0] in "#;" or "=" not in stripped:
                continue
            key = stripped.split("=", 1)[0].strip(" \t")
            if not key:
                continue
            k = key.lower()
            if k not in found:
                order.append((k, key))
            found[k] = stripped.split("=", 1)[1].strip(" \t").rstrip(" \t\r")
        return found, order

    fleet_values, fleet_order = settings_of(fleet)
    local_values, local_order = settings_of(local)
    out, seen = [], set()
    lines = vendor.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        stripped = line.lstrip(" \t")
        if stripped and stripped[0] not in "#;" and "=" in stripped and stripped.split("=", 1)[0].strip(" \t"):
            k = stripped.split("=", 1)[0].strip(" \t").lower()
            seen.add(k)
            if k in fleet_values or k in local_values:
                head, rest = line.split("=", 1)
                spaces = rest[:len(rest) - len(rest.lstrip(" \t"))]
                out.append(f"{head}={spaces}{fleet_values.get(k, local_values.get(k))}")
                continue
        out.append(line)
    for k, key in local_order:
        if k not in seen:
            seen.add(k)
            out.append(f"{key}={fleet_values.get(k, local_values[k])}")
    for k, key in fleet_order:
        if k not in seen:
            seen.add(k)
            out.append(f"{key}={fleet_values[k]}")
    return "".join(line + "\n" for line in out)


def run_merge(awk: str, tmp_path: Path, vendor: str, local: str, fleet: str) -> str:
    files = {}
    for name, text in (("vendor", vendor), ("local", local), ("fleet", fleet)):
        files[name] = tmp_path / f"{name} conf"
        files[name].write_text(text)
    env = {"MERGE_BASE": str(files["vendor"]), "MERGE_LOCAL": str(files["local"]),
           "MERGE_FLEET": str(files["fleet"]), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([awk, merge_awk_program()], env=env, capture_output=True, text=True,
                            check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout


KEYS = st.sampled_from(["Switch", "switch", "SWITCH", "LoggingLevel", "logginglevel",
                        "BackgroundChannelUrl", "Custom.Key", "x"])
VALUES = st.text(alphabet="abcXYZ019:/.=; #-", max_size=12).map(str.strip)
LINES = st.one_of(
    st.tuples(KEYS, VALUES, st.sampled_from(["=", " = ", "=\t"])).map(lambda t: f"{t[0]}{t[2]}{t[1]}"),
    st.sampled_from(["# comment", "; Switch=commented", "", "  indented=1", "[section]", "novalue"]),
)
CONF = st.lists(LINES, max_size=8).map(lambda lines: "".join(line + "\n" for line in lines))


@pytest.mark.parametrize("awk", ["original-awk", "mawk"])
@settings(max_examples=60, deadline=None)
@given(vendor=CONF, local=CONF, fleet=CONF)
def test_merge_matches_the_model(awk, vendor, local, fleet, tmp_path_factory):
    tool = require_tool(awk)
    tmp = tmp_path_factory.mktemp("merge")
    assert run_merge(tool, tmp, vendor, local, fleet) == model_merge(vendor, local, fleet)


def test_merge_example_from_the_issue(tmp_path):
    local = ("# edited by the admin\nswitch=old.acme.local:4000\nBACKGROUNDCHANNELURL = https://old/B\n"
             "LoggingLevel=Debug\nModule.Inventory.Enabled=false\nCustomKey=keep me\n")
    fleet = "Switch=tachyon.acme.local:4000\nBackgroundChannelUrl=https://tachyon.acme.local/Background\n"
    merged = run_merge(require_tool("original-awk"), tmp_path, VENDOR_CONF, local, fleet)
    assert merged == (
        "# 1E Client configuration\n"
        "# Switch=<host>:<port>   (mandatory)\n"
        "Switch=tachyon.acme.local:4000\n"
        "BackgroundChannelUrl=https://tachyon.acme.local/Background\n"
        "\n"
        "; Logging: Error, Warning, Info, Debug\n"
        "LoggingLevel=Debug\n"
        "Module.Inventory.Enabled=false\n"
        "CustomKey=keep me\n")


# -- wrapper scripts in the isolated root ----------------------------------------------------------

def conf_text(root: MacRoot, ctx=SAMPLE, prefix: str = "") -> str:
    return root.read(prefix + ctx.conf_path).decode()


def assert_root_wheel_0644(root: MacRoot, mac_path: str) -> None:
    info = root.path(mac_path).stat()
    assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)) == (0, 0, "0o644")


def test_fresh_install_on_intel(mac_root):
    run = install(mac_root)
    assert run.pre.returncode == 0 and run.post.returncode == 0, run.output
    assert conf_text(mac_root) == VENDOR_CONF.replace(
        "Switch=\n", "Switch=tachyon.acme.local:4000\n").replace(
        "BackgroundChannelUrl=\n", "BackgroundChannelUrl=https://tachyon.acme.local/Background\n")
    assert_root_wheel_0644(mac_root, SAMPLE.conf_path)
    assert tools(mac_root, "sysctl") == [("-in", "hw.optional.arm64")]
    assert tools(mac_root, "softwareupdate") == []
    assert tools(mac_root, "launchctl") == [
        ("print", f"system/{LABEL}"), ("print", f"system/{LABEL}"), ("enable", f"system/{LABEL}"),
        ("bootstrap", "system", SAMPLE.daemon_plist)]
    assert mac_root.daemon_state(LABEL) == "running"
    assert not mac_root.exists(f"{SAMPLE.support_dir}/backup")
    lines = log_lines(mac_root)
    assert lines and all(TIMESTAMPED.match(line) for line in lines)
    assert any("fresh install" in line for line in lines)
    assert any("started daemon com.1e.pkg.1E.Client (launchctl bootstrap)" in line for line in lines)
    assert run.pre.stdout.splitlines() + run.post.stdout.splitlines() == lines


def test_apple_silicon_without_rosetta_installs_it(mac_root):
    mac_root.set_state("arm64", "1")
    run = install(mac_root)
    assert run.post.returncode == 0, run.output
    assert tools(mac_root, "softwareupdate") == [("--install-rosetta", "--agree-to-license")]
    assert mac_root.exists(ROSETTA)
    assert "Rosetta 2 installed" in run.output


def test_apple_silicon_with_rosetta_does_not_reinstall_it(mac_root):
    mac_root.set_state("arm64", "1")
    mac_root.write(ROSETTA, b"")
    run = install(mac_root)
    assert run.post.returncode == 0, run.output
    assert tools(mac_root, "softwareupdate") == []
    assert "Rosetta 2 is already installed" in run.output


def test_native_binary_never_asks_for_rosetta(mac_root):
    mac_root.set_state("arm64", "1")
    run = install(mac_root, replace(SAMPLE, needs_rosetta=False))
    assert run.post.returncode == 0, run.output
    assert tools(mac_root, "softwareupdate") == [] and tools(mac_root, "sysctl") == []


def test_offline_rosetta_failure_stops_the_install(mac_root):
    mac_root.set_state("arm64", "1")
    mac_root.respond("softwareupdate", "--install-rosetta", rc=1,
                     err="Installing Rosetta 2 on this system is not supported.\n"
                         "Failed to download: The Internet connection appears to be offline.\n")
    run = install(mac_root)
    assert run.pre.returncode == 1 and run.post is None
    last = log_lines(mac_root)[-1]
    assert "ERROR: Rosetta 2 could not be installed (softwareupdate exited 1: " in last
    assert "appears to be offline" in last and "content cache" in last
    assert tools(mac_root, "launchctl") == [("print", f"system/{LABEL}")]


LOCAL_CONF = """\
# 1E Client configuration
# Switch=<host>:<port>   (mandatory)
switch=old.acme.local:4000
BACKGROUNDCHANNELURL = https://old.acme.local/Background
; Logging: Error, Warning, Info, Debug
LoggingLevel=Debug
Module.Inventory.Enabled=false
Proxy=http://proxy.acme.local:8080
"""


def test_upgrade_keeps_local_settings_and_the_fleet_wins(mac_root):
    mac_root.write(SAMPLE.conf_path, LOCAL_CONF)
    mac_root.daemon_loaded(LABEL)
    run = install(mac_root)
    assert run.post.returncode == 0, run.output
    assert conf_text(mac_root) == (
        "# 1E Client configuration\n"
        "# Switch=<host>:<port>   (mandatory)\n"
        "Switch=tachyon.acme.local:4000\n"
        "BackgroundChannelUrl=https://tachyon.acme.local/Background\n"
        "\n"
        "; Logging: Error, Warning, Info, Debug\n"
        "LoggingLevel=Debug\n"
        "Module.Inventory.Enabled=false\n"
        "Proxy=http://proxy.acme.local:8080\n")
    assert_root_wheel_0644(mac_root, SAMPLE.conf_path)
    # the running daemon was stopped before the vendor package, then started again
    assert ("bootout", f"system/{LABEL}") in tools(mac_root, "launchctl")
    assert tools(mac_root, "launchctl")[-1] == ("bootstrap", "system", SAMPLE.daemon_plist)
    assert not mac_root.exists(f"{SAMPLE.support_dir}/backup/1E.Client.conf.local")
    assert any("kept the current configuration" in line for line in log_lines(mac_root))


def test_upgrade_where_the_fleet_sets_logging_level(mac_root):
    ctx = replace(SAMPLE, client_settings=SAMPLE.client_settings + (("logginglevel", "Warning"),
                                                                    ("NewFleetKey", "1")))
    mac_root.write(ctx.conf_path, LOCAL_CONF)
    run = install(mac_root, ctx)
    assert run.post.returncode == 0, run.output
    lines = conf_text(mac_root, ctx).splitlines()
    assert "LoggingLevel=Warning" in lines and "LoggingLevel=Debug" not in lines
    assert lines[-2:] == ["Proxy=http://proxy.acme.local:8080", "NewFleetKey=1"]


def test_daemon_already_loaded_is_restarted(mac_root):
    run = install(mac_root, vendor_loads_daemon=True)
    assert run.post.returncode == 0, run.output
    calls = tools(mac_root, "launchctl")
    assert calls[-1] == ("kickstart", "-k", f"system/{LABEL}")
    assert not any(call[0] == "bootstrap" for call in calls)
    assert mac_root.daemon_state(LABEL) == "running"


def test_failing_launchctl_fails_the_install_with_the_reason(mac_root):
    mac_root.respond("launchctl", "bootstrap", rc=5, err="Bootstrap failed: 5: Input/output error\n")
    run = install(mac_root)
    assert run.pre.returncode == 0
    assert run.post.returncode == 1
    last = log_lines(mac_root)[-1]
    assert TIMESTAMPED.match(last)
    assert last.endswith(f"configure: ERROR: launchctl bootstrap system '{SAMPLE.daemon_plist}' "
                         "exited 5: Bootstrap failed: 5: Input/output error")
    assert last in run.post.stdout


def test_daemon_that_will_not_stop_fails_the_prepare_step(mac_root):
    mac_root.daemon_loaded(LABEL)
    mac_root.respond("launchctl", "bootout", rc=5, err="Boot-out failed: 5: Input/output error\n")
    run = install(mac_root)
    assert run.pre.returncode == 1 and run.post is None
    assert "ERROR: could not stop daemon com.1e.pkg.1E.Client: launchctl bootout exited 5: " \
           "Boot-out failed: 5: Input/output error" in log_lines(mac_root)[-1]


@pytest.mark.parametrize("arm64, upgrade", [(False, False), (True, True)])
def test_second_run_changes_nothing(mac_root, arm64, upgrade):
    if arm64:
        mac_root.set_state("arm64", "1")
    if upgrade:
        mac_root.write(SAMPLE.conf_path, LOCAL_CONF)
    first = install(mac_root)
    assert first.post.returncode == 0, first.output
    after_one = mac_root.snapshot(exclude=VOLATILE)
    conf_one = mac_root.read(SAMPLE.conf_path)
    mac_root.clear_calls()
    second = install(mac_root)
    assert second.post.returncode == 0, second.output
    assert mac_root.read(SAMPLE.conf_path) == conf_one
    assert mac_root.snapshot(exclude=VOLATILE) == after_one
    assert tools(mac_root, "softwareupdate") == []
    assert ("bootout", f"system/{LABEL}") in tools(mac_root, "launchctl")
    assert mac_root.daemon_state(LABEL) == "running"


def test_another_volume_gets_the_files_and_nothing_is_started(mac_root):
    volume = "/Volumes/Macintosh HD 2"
    mac_root.path(volume).mkdir(parents=True)
    mac_root.set_state("arm64", "1")
    mac_root.write(volume + SAMPLE.conf_path, LOCAL_CONF)
    run = install(mac_root, target=volume + "/")
    assert run.post.returncode == 0, run.output
    assert tools(mac_root, "launchctl") == []
    assert tools(mac_root, "softwareupdate") == []
    assert mac_root.daemon_state(LABEL) is None
    merged = conf_text(mac_root, prefix=volume)
    assert "Switch=tachyon.acme.local:4000\n" in merged and "Proxy=http://proxy.acme.local:8080\n" in merged
    assert_root_wheel_0644(mac_root, volume + SAMPLE.conf_path)
    assert not mac_root.exists(SAMPLE.conf_path)
    assert not mac_root.exists(ROSETTA) and not mac_root.exists(volume + ROSETTA)
    assert "install it at first boot" in run.output
    assert "starts from" in run.output and "at its next boot" in run.output


def test_vendor_conf_missing_after_install_starts_from_the_preserved_copy(mac_root):
    mac_root.write(SAMPLE.conf_path, LOCAL_CONF)
    run = install(mac_root, vendor_conf=None)
    assert run.post.returncode == 0, run.output
    lines = conf_text(mac_root).splitlines()
    assert lines[:3] == ["# 1E Client configuration", "# Switch=<host>:<port>   (mandatory)",
                         "switch=tachyon.acme.local:4000"]
    assert "LoggingLevel=Debug" in lines
    assert "starting from the preserved copy" in run.output


def test_vendor_conf_missing_and_nothing_preserved_starts_empty(mac_root):
    run = install(mac_root, vendor_conf=None)
    assert run.post.returncode == 0, run.output
    assert conf_text(mac_root) == ("Switch=tachyon.acme.local:4000\n"
                                   "BackgroundChannelUrl=https://tachyon.acme.local/Background\n")
    assert "starting from an empty file" in run.output


def test_a_pending_copy_from_an_interrupted_install_is_not_overwritten(mac_root):
    backup = f"{SAMPLE.support_dir}/backup/1E.Client.conf.local"
    mac_root.write(backup, LOCAL_CONF)
    mac_root.write(SAMPLE.conf_path, VENDOR_CONF)  # the earlier install reset it, then stopped
    run = install(mac_root)
    assert run.post.returncode == 0, run.output
    assert "LoggingLevel=Debug" in conf_text(mac_root).splitlines()
    assert "stopped before merging it" in run.output


def test_scripts_refuse_to_run_without_a_target(mac_root):
    scripts = render_wrapper_scripts(SAMPLE)
    for name in ("preinstall", "postinstall"):
        result = mac_root.run_script(scripts[name], name, [], folder=SANDBOX)
        assert result.returncode == 1
        assert "no target volume ($3 is empty)" in result.stdout


def test_hostile_values_stay_data(mac_root):
    mac_root.set_state("arm64", "1")
    run = install(mac_root, HOSTILE)
    assert run.post.returncode == 0, run.output
    merged = conf_text(mac_root, HOSTILE)
    assert f"Switch={HOSTILE.client_settings[0][1]}\n" in merged
    assert f"BackgroundChannelUrl={HOSTILE.client_settings[1][1]}\n" in merged
    assert tools(mac_root, "launchctl")[-1] == ("bootstrap", "system", HOSTILE.daemon_plist)
    injected = {"pwned", "pwned2", "pwned3", "pwned4"}
    assert not [p for p in mac_root.upper.rglob("pwned*") if p.name in injected]
    assert mac_root.daemon_state(HOSTILE.daemon_label) == "running"


# -- uninstall ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctx", [SAMPLE, HOSTILE], ids=["sample", "hostile"])
def test_uninstall_removes_everything_and_is_idempotent(mac_root, ctx):
    run = install(mac_root, ctx)
    assert run.post.returncode == 0, run.output
    write_receipts(mac_root, ctx)
    admin_file = ctx.binary_path.rsplit("/", 1)[0] + "/notes.txt"
    mac_root.write(admin_file, "not the package's\n")
    uninstall = f"{ctx.support_dir}/uninstall.sh"
    mac_root.clear_calls()
    result = mac_root.run([uninstall])
    assert result.returncode == 0, result.stdout + result.stderr
    for gone in (ctx.conf_path, ctx.binary_path, ctx.daemon_plist, ctx.support_dir,
                 ctx.log_path, "/Library/Application Support/fleetpkg"):
        assert not mac_root.exists(gone), gone
    assert mac_root.exists(admin_file)  # its folder stays because it is not empty
    assert mac_root.exists("/Library/LaunchDaemons")
    assert mac_root.daemon_state(ctx.daemon_label) is None
    assert ("bootout", f"system/{ctx.daemon_label}") in tools(mac_root, "launchctl")
    assert [c for c in tools(mac_root, "pkgutil") if c[0] == "--forget"] == [
        ("--forget", receipt) for receipt in ctx.receipts]
    assert ("--only-files", "--files", ctx.receipts[1]) in tools(mac_root, "pkgutil")
    before = mac_root.snapshot(exclude=("stubs",))
    # uninstall.sh deleted itself with the support folder: run the same text again from elsewhere
    text = render_wrapper_scripts(ctx)["uninstall.sh"]
    second = mac_root.run_script(text, "uninstall.sh", [], folder="/private/tmp/again")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "no receipt (already removed)" in second.stdout
    assert mac_root.snapshot(exclude=("stubs", "private/tmp/again")) == before


def test_uninstall_removes_empty_vendor_folders_but_never_system_ones(mac_root):
    install(mac_root)
    write_receipts(mac_root, SAMPLE)
    result = mac_root.run([f"{SAMPLE.support_dir}/uninstall.sh"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not mac_root.exists("/Library/Application Support/1E")
    assert mac_root.exists("/Library/Application Support") and mac_root.exists("/Library/LaunchDaemons")


def test_uninstall_refuses_without_root(mac_root):
    install(mac_root)
    write_receipts(mac_root, SAMPLE)
    uninstall = f"{SAMPLE.support_dir}/uninstall.sh"
    result = mac_root.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           uninstall])
    assert result.returncode == 1
    assert "must run as root" in result.stderr
    assert mac_root.exists(SAMPLE.conf_path) and mac_root.calls("launchctl")[-1].args[0] != "bootout"


def test_uninstall_reports_a_failing_pkgutil(mac_root):
    install(mac_root)
    write_receipts(mac_root, SAMPLE)
    mac_root.respond("pkgutil", "--only-files --files com.1e.pkg.1E.Client", rc=1,
                     err="Error: database is locked\n")
    result = mac_root.run([f"{SAMPLE.support_dir}/uninstall.sh"])
    assert result.returncode == 1
    assert "pkgutil --only-files --files com.1e.pkg.1E.Client exited 1: Error: database is locked" in result.stderr


# -- identity package scripts ------------------------------------------------------------------------

PASSWORD = "s3cret-Pässword 'with' \"quotes\" $(and) `more`"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    root = make_ca(folder, "Acme Root CA")
    issuing = make_ca(folder, "Acme Issuing CA", issuer=root)
    leaf = make_leaf(folder, issuing, "MAC01.local", san=("MAC01.local",))
    p12 = make_p12(folder / "MAC01.p12", leaf, (issuing, root), PASSWORD)
    return {"root": root, "issuing": issuing, "leaf": leaf, "p12": p12}


def identity_files(pki, password: str = PASSWORD) -> dict[str, tuple[bytes, int]]:
    return {IDENTITY.p12_name: (pki["p12"], 0o600),
            IDENTITY_PASSWORD_FILE: (password.encode(), 0o600),
            "acme-root.cer": (pki["root"].der(), 0o644),
            "acme-issuing.cer": (pki["issuing"].der(), 0o644)}


IDENTITY_SCRIPTS = f"{SANDBOX}/com.acme.identity.MAC01"


def install_identity(root: MacRoot, pki, *, password: str = PASSWORD, env=None, target="/"):
    """Installer for the identity package: preinstall, then (if it agreed) postinstall."""
    scripts = render_identity_scripts(IDENTITY)
    pre = root.run_script(scripts["preinstall"], "preinstall", ["/tmp/MAC01.pkg", "/", target, "/"],
                          folder=IDENTITY_SCRIPTS, env=env, extra_files=identity_files(pki, password))
    if pre.returncode != 0:
        return pre, None
    post = root.run_script(scripts["postinstall"], "postinstall", ["/tmp/MAC01.pkg", "/", target, "/"],
                           folder=IDENTITY_SCRIPTS, env=env)
    return pre, post


def secrets_gone(root: MacRoot) -> None:
    assert not root.exists(f"{IDENTITY_SCRIPTS}/{IDENTITY.p12_name}")
    assert not root.exists(f"{IDENTITY_SCRIPTS}/{IDENTITY_PASSWORD_FILE}")
    needle = PASSWORD.encode()
    for current, _dirs, files in __import__("os").walk(root.upper):
        for name in files:
            path = Path(current) / name
            if path.is_file() and not path.is_symlink():
                assert needle not in path.read_bytes(), f"password found in {path}"


def keychain(root: MacRoot, kind: str) -> list[str]:
    folder = root.path(f"/stubs/keychain/System.keychain/{kind}")
    return sorted(p.stem for p in folder.glob("*.pem")) if folder.exists() else []


@pytest.mark.parametrize("names", [
    {"LocalHostName": "MAC01"},                         # macOS form without .local
    {"hostname": "mac01.LOCAL"},                        # case-insensitive
    {"LocalHostName": "other", "HostName": "Mac01"},    # HostName when set
])
def test_identity_installs_on_its_mac(mac_root, pki, names):
    mac_root.write(SAMPLE.binary_path, b"\xcf\xfa\xed\xfe", 0o755)
    mac_root.set_state("hostname", "localhost")
    for key, value in names.items():
        mac_root.set_state(key, value)
    pre, post = install_identity(mac_root, pki)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert post.returncode == 0, post.stdout + post.stderr
    imports = [c for c in tools(mac_root, "security") if c[0] == "import"]
    assert imports == [("import", f"{IDENTITY_SCRIPTS}/{IDENTITY.p12_name}", "-k",
                        "/Library/Keychains/System.keychain", "-f", "pkcs12", "-P", "<redacted>",
                        "-T", SAMPLE.binary_path, "-x")]
    assert mac_root.read("/stubs/state/import-password") == b"ok\n"
    sha1 = pki["leaf"].sha1()
    assert keychain(mac_root, "identities") == [sha1]
    acl = mac_root.read(f"/stubs/keychain/System.keychain/acl/{sha1}").decode()
    assert acl == f"T {SAMPLE.binary_path}\nextractable 0\n"
    assert sorted(keychain(mac_root, "certs")) == sorted([pki["root"].sha1(), pki["issuing"].sha1()])
    assert [c[:3] for c in tools(mac_root, "security") if c[0] == "add-certificates"] == [
        ("add-certificates", "-k", "/Library/Keychains/System.keychain")] * 2
    assert "not trusted" in post.stdout and "trust profile" in post.stdout
    secrets_gone(mac_root)


def test_identity_restarts_a_loaded_daemon(mac_root, pki):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC01")
    mac_root.daemon_loaded(LABEL)
    pre, post = install_identity(mac_root, pki)
    assert post.returncode == 0, post.stdout
    assert tools(mac_root, "launchctl")[-1] == ("kickstart", "-k", f"system/{LABEL}")
    assert "restarted daemon" in post.stdout
    mac_root.clear_calls()
    mac_root.path(f"/stubs/state/loaded/{LABEL}").unlink()
    pre, post = install_identity(mac_root, pki)
    assert post.returncode == 0
    assert tools(mac_root, "launchctl") == [("print", f"system/{LABEL}")]


def test_identity_refused_on_another_mac(mac_root, pki):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC02")
    mac_root.set_state("hostname", "MAC02.local")
    pre, post = install_identity(mac_root, pki)
    assert pre.returncode == 1 and post is None
    assert "REFUSED: this package holds the identity of MAC01.local but this Mac is named: " \
           "LocalHostName=MAC02 hostname=MAC02.local" in pre.stdout
    assert tools(mac_root, "security") == []
    secrets_gone(mac_root)


def test_identity_near_miss_names_do_not_match(mac_root, pki):
    mac_root.set_state("LocalHostName", "MAC011")
    mac_root.set_state("hostname", "mac01.acme.com")
    pre, _ = install_identity(mac_root, pki)
    assert pre.returncode == 1


@pytest.mark.parametrize("how", ["file", "env"])
def test_identity_override(mac_root, pki, how):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC02")
    env = None
    if how == "file":
        mac_root.write("/Library/Application Support/fleetpkg/acme-prod/allow-any-host", "")
    else:
        from tests.scripts.macroot import INSTALLER_ENV
        env = dict(INSTALLER_ENV, FLEETPKG_ALLOW_ANY_HOST="1")
    pre, post = install_identity(mac_root, pki, env=env)
    assert pre.returncode == 0 and post.returncode == 0, pre.stdout + (post.stdout if post else "")
    assert "installing anyway" in pre.stdout
    assert keychain(mac_root, "identities") == [pki["leaf"].sha1()]
    secrets_gone(mac_root)


def test_identity_failed_import_still_removes_the_secrets(mac_root, pki):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC01")
    mac_root.respond("security", "import", rc=1,
                     err="security: SecKeychainItemImport: User interaction is not allowed.\n")
    pre, post = install_identity(mac_root, pki)
    assert pre.returncode == 0
    assert post.returncode == 1
    assert "ERROR: security import into '/Library/Keychains/System.keychain' exited 1: " \
           "security: SecKeychainItemImport: User interaction is not allowed." in post.stdout
    secrets_gone(mac_root)


def test_identity_wrong_password_fails_clearly_and_removes_the_secrets(mac_root, pki):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC01")
    pre, post = install_identity(mac_root, pki, password="not it")
    assert post.returncode == 1
    assert "cannot read the certificate in 'MAC01.local.p12' with its password" in post.stdout
    assert keychain(mac_root, "identities") == []
    secrets_gone(mac_root)


def test_identity_reinstall_regrants_access_after_a_client_upgrade(mac_root, pki):
    mac_root.write(SAMPLE.binary_path, b"x", 0o755)
    mac_root.set_state("LocalHostName", "MAC01")
    install_identity(mac_root, pki)
    mac_root.clear_calls()
    pre, post = install_identity(mac_root, pki)
    assert post.returncode == 0, post.stdout
    sha1 = pki["leaf"].sha1()
    calls = tools(mac_root, "security")
    assert ("delete-identity", "-Z", sha1, "/Library/Keychains/System.keychain") in calls
    assert [c[0] for c in calls].index("delete-identity") < [c[0] for c in calls].index("import")
    assert not any(c[0] == "add-certificates" for c in calls)  # already there
    assert keychain(mac_root, "identities") == [sha1]
    secrets_gone(mac_root)


def test_identity_needs_the_client_binary_first(mac_root, pki):
    mac_root.set_state("LocalHostName", "MAC01")
    pre, post = install_identity(mac_root, pki)
    assert post.returncode == 1
    assert "install the 1E Client wrapper package first" in post.stdout
    secrets_gone(mac_root)


def test_identity_only_on_the_running_system(mac_root, pki):
    mac_root.path("/Volumes/Other").mkdir(parents=True)
    mac_root.set_state("LocalHostName", "MAC01")
    pre, post = install_identity(mac_root, pki, target="/Volumes/Other")
    assert pre.returncode == 1 and post is None
    assert "only on the running system" in pre.stdout
    secrets_gone(mac_root)


# -- Jamf extension attribute -----------------------------------------------------------------------

def test_jamf_ea_without_the_wrapper(mac_root):
    result = mac_root.run_script(render_jamf_ea(SAMPLE), "ea.sh", [], folder="/private/tmp/ea")
    assert (result.returncode, result.stdout) == (0, "<result>not installed</result>\n")


def test_jamf_ea_passes_the_doctor_result_through(mac_root):
    mac_root.write(f"{SAMPLE.support_dir}/doctor",
                   "#!/bin/bash\necho noise\necho '<result>unhealthy: x; y</result>'\nexit 1\n", 0o755)
    result = mac_root.run_script(render_jamf_ea(SAMPLE), "ea.sh", [], folder="/private/tmp/ea")
    assert result.stdout == "<result>unhealthy: x; y</result>\n"
    mac_root.write(f"{SAMPLE.support_dir}/doctor", "#!/bin/bash\nexit 3\n", 0o755)
    result = mac_root.run_script(render_jamf_ea(SAMPLE), "ea.sh", [], folder="/private/tmp/ea")
    assert result.stdout.count("<result>") == 1 and "did not run" in result.stdout
