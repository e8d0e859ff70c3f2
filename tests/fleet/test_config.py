"""fleet.toml + devices.csv loading: every mistake is one ConfigError line naming file/key/line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.fleet.config import (
    ClientSettings, FleetConfig, MunkiTarget, load_config, validate_https_url, validate_switch,
)
from builder.errors import ConfigError
from builder.fleet.passwords import ChallengeSource, PasswordSource
from tests.fleetfactory import FLEET_TOML, make_fleet


@pytest.fixture
def fleet(tmp_path):
    return make_fleet(tmp_path)


def edit(fleet, old: str, new: str) -> Path:
    text = fleet.config.read_text()
    assert old in text, old
    fleet.config.write_text(text.replace(old, new, 1))
    return fleet.config


def append(fleet, extra: str) -> Path:
    fleet.config.write_text(fleet.config.read_text() + "\n" + extra)
    return fleet.config


def error_of(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text, text
    return text


# --- the happy path ---------------------------------------------------------------------------

def test_valid_fleet_loads_with_defaults(fleet, monkeypatch):
    monkeypatch.chdir(fleet.root)
    cfg = load_config("fleet.toml")
    assert isinstance(cfg, FleetConfig)
    assert cfg.path == fleet.config.absolute() and cfg.root == fleet.root
    assert (cfg.fleet.name, cfg.fleet.organization, cfg.fleet.identifier) == (
        "acme-test", "ACME Corp", "com.acme.1e-client")
    assert cfg.fleet.build == 3 and cfg.fleet.minimum_os is None
    assert cfg.vendor.package == fleet.root / "vendor/1e.client-macOS_v5.1.0.12.pkg"
    assert cfg.vendor.package.is_absolute() and cfg.vendor.allow_foreign_vendor is False
    assert cfg.client.items == (("Switch", "tachyon.acme.local:4000"),
                                ("BackgroundChannelUrl", "https://tachyon.acme.local/Background"),
                                ("LoggingLevel", "Info"))
    assert cfg.client.switch == "tachyon.acme.local:4000"
    assert cfg.client.switches == ("tachyon.acme.local:4000",)
    assert cfg.client.background_channel_url == "https://tachyon.acme.local/Background"
    assert cfg.trust.certificates == (fleet.root / "pki/root.pem",)
    assert cfg.inventory.path == fleet.root / "devices.csv"
    assert cfg.inventory.default_password == PasswordSource("env", "FLEET_PFX_PASSWORD")
    assert [(d.hostname, d.pfx, d.line, d.serial) for d in cfg.devices] == [
        ("MAC01.local", fleet.root / "pfx/MAC01.local.pfx", 2, None),
        ("mac02", fleet.root / "pfx/mac02.pfx", 3, None),
    ]
    assert cfg.devices[0].password == PasswordSource("env", "FLEET_PFX_PASSWORD")
    assert cfg.devices[0].where == "device MAC01.local (devices.csv:2)"
    assert cfg.signing.installer is None and cfg.signing.profile is None
    assert cfg.signing.timestamp_url is None
    assert cfg.profiles.allow_all_apps_access is True and cfg.profiles.key_is_extractable is False
    assert cfg.targets.munki == MunkiTarget(("testing",), "1E-Client")
    assert (cfg.targets.jamf, cfg.targets.intune, cfg.targets.manual) == (True, True, True)
    with pytest.raises(AttributeError):
        cfg.fleet.name = "x"  # frozen


def test_full_config_every_table(tmp_path):
    f = make_fleet(tmp_path)
    for name in ("signing/inst.p12", "signing/prof-cert.pem", "signing/prof-key.pem",
                 "signing/chain1.pem", "signing/chain2.pem", "secrets/pw.txt"):
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_text("x\n")
    edit(f, "build = 3", 'build = 0\nminimum_os = "11.0"')
    edit(f, 'package = "vendor/1e.client-macOS_v5.1.0.12.pkg"',
         'package = "vendor/1e.client-macOS_v5.1.0.12.pkg"\nallow_foreign_vendor = true')
    edit(f, 'password_env = "FLEET_PFX_PASSWORD"', 'password_file = "secrets/pw.txt"')
    append(f, """
[signing]
installer_identity = "signing/inst.p12"
installer_password_env = "INSTALLER_P12_PASSWORD"
profile_certificate = "signing/prof-cert.pem"
profile_key = "signing/prof-key.pem"
profile_chain = ["signing/chain1.pem", "signing/chain2.pem"]
timestamp_url = "http://timestamp.apple.com/ts01"

[profiles]
allow_all_apps_access = false
key_is_extractable = true

[targets]
munki = { catalogs = ["production", "testing"], name = "ACME-1E" }
jamf = false
intune = true
manual = false
""")
    cfg = load_config(f.config)
    assert cfg.fleet.build == 0 and cfg.fleet.minimum_os == "11.0"
    assert cfg.vendor.allow_foreign_vendor is True
    assert cfg.inventory.default_password == PasswordSource("file", str(tmp_path / "secrets/pw.txt"))
    inst, prof = cfg.signing.installer, cfg.signing.profile
    assert inst.role == "installer" and inst.p12 == tmp_path / "signing/inst.p12"
    assert inst.certificate is None and inst.key is None and inst.chain == ()
    assert inst.password == PasswordSource("env", "INSTALLER_P12_PASSWORD")
    assert prof.p12 is None and prof.certificate == tmp_path / "signing/prof-cert.pem"
    assert prof.key == tmp_path / "signing/prof-key.pem"
    assert prof.chain == (tmp_path / "signing/chain1.pem", tmp_path / "signing/chain2.pem")
    assert prof.password is None
    assert cfg.signing.timestamp_url == "http://timestamp.apple.com/ts01"
    assert cfg.profiles.allow_all_apps_access is False and cfg.profiles.key_is_extractable is True
    assert cfg.targets.munki == MunkiTarget(("production", "testing"), "ACME-1E")
    assert (cfg.targets.jamf, cfg.targets.intune, cfg.targets.manual) == (False, True, False)


@pytest.mark.parametrize("value,expected", [("true", MunkiTarget()), ("false", None),
                                            ('{ name = "X" }', MunkiTarget(("testing",), "X")),
                                            ("{ identities = true }", MunkiTarget(identities=True))])
def test_munki_forms(fleet, value, expected):
    append(fleet, f"[targets]\nmunki = {value}\n")
    assert load_config(fleet.config).targets.munki == expected


def test_paths_relative_to_config_not_cwd(fleet, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(fleet.config)
    assert cfg.devices[0].pfx == fleet.root / "pfx/MAC01.local.pfx"


# --- typos, types, missing keys ----------------------------------------------------------------

def test_unknown_key_suggests_closest(fleet, monkeypatch):
    monkeypatch.chdir(fleet.root)
    edit(fleet, 'organization = "ACME Corp"', 'organisation = "ACME Corp"')
    msg = error_of("fleet.toml")
    assert msg.startswith("fleet.toml: ")
    assert "[fleet] missing required key 'organization'" in msg
    assert "'organisation'" in msg  # the typo is pointed at


def test_unknown_extra_key_suggests(fleet):
    edit(fleet, "build = 3", "build = 3\nidentifer = \"x\"")
    msg = error_of(fleet.config)
    assert "[fleet] unknown key 'identifer'" in msg and "did you mean 'identifier'?" in msg
    assert str(fleet.config) in msg


def test_unknown_key_lists_valid_when_nothing_close(fleet):
    append(fleet, "[profiles]\nzzz = true\n")
    msg = error_of(fleet.config)
    assert "[profiles] unknown key 'zzz'" in msg
    assert "'allow_all_apps_access'" in msg and "'key_is_extractable'" in msg


def test_unknown_table_suggests(fleet):
    append(fleet, "[target]\njamf = true\n")
    msg = error_of(fleet.config)
    assert "unknown table [target]" in msg and "did you mean [targets]?" in msg


def test_signing_typo_suggests(fleet):
    append(fleet, '[signing]\ninstaller_identiy = "x.p12"\n')
    assert "did you mean 'installer_identity'?" in error_of(fleet.config)


def test_unknown_munki_key(fleet):
    append(fleet, '[targets]\nmunki = { catalog = ["a"] }\n')
    msg = error_of(fleet.config)
    assert "[targets.munki] unknown key 'catalog'" in msg and "'catalogs'" in msg


@pytest.mark.parametrize("old,new,needle", [
    ("build = 3", 'build = "3"', "fleet.build: expected an integer, got a string"),
    ("build = 3", "build = true", "fleet.build: expected an integer, got a boolean"),
    ("build = 3", "build = -1", "fleet.build: must be 0 or more"),
    ("build = 3", "build = 3\nminimum_os = 11.0", "fleet.minimum_os: expected a string, got a float"),
    ("build = 3", 'build = 3\nminimum_os = "eleven"', "fleet.minimum_os: 'eleven' is not a macOS"),
    ('name = "acme-test"', 'name = "ACME Test"', "fleet.name: 'ACME Test' must be lowercase"),
    ('name = "acme-test"', 'name = "-acme"', "fleet.name: '-acme' must be lowercase"),
    ('name = "acme-test"', "name = 5", "fleet.name: expected a string, got an integer"),
    ('identifier = "com.acme.1e-client"', 'identifier = "acme"', "fleet.identifier: 'acme' is not"),
    ('identifier = "com.acme.1e-client"', 'identifier = "com..acme"', "is not a reverse-DNS"),
    ('organization = "ACME Corp"', 'organization = ""', "fleet.organization: must not be empty"),
    ('organization = "ACME Corp"', 'organization = "A\\nB"', "fleet.organization: contains a control"),
    ('certificates = ["pki/root.pem"]', "certificates = []", "trust.certificates: must list at least"),
    ('certificates = ["pki/root.pem"]', 'certificates = ["pki/none.pem"]', "pki/none.pem: no such file"),
    ('certificates = ["pki/root.pem"]', 'certificates = ["pki/root.pem", "pki/root.pem"]', "twice"),
    ('certificates = ["pki/root.pem"]', "certificates = [1]", "item 1 must be"),
    ('package = "vendor/1e.client-macOS_v5.1.0.12.pkg"', 'package = "vendor/missing.pkg"',
     "vendor.package: "),
    ('package = "vendor/1e.client-macOS_v5.1.0.12.pkg"', 'package = "vendor/x.exe"',
     "must end in .pkg, .dmg, .zip"),
    ('certificates = ["pki/root.pem"]', 'certificates = ["pki"]', "pki: not a regular file"),
    ('inventory = "devices.csv"', 'inventory = "nope.csv"', "devices.inventory: "),
    ('password_env = "FLEET_PFX_PASSWORD"', 'password_env = "FLEET_PFX_PASSWORD"\npassword_file = "devices.csv"',
     "set either password_env or password_file, not both"),
    ('password_env = "FLEET_PFX_PASSWORD"', 'password_env = "no such var"',
     "devices.password_env: is not an environment variable name"),
    ('password_env = "FLEET_PFX_PASSWORD"', 'password_file = "secret.txt"', "secret.txt: no such file"),
])
def test_bad_values_name_the_key(fleet, old, new, needle):
    edit(fleet, old, new)
    msg = error_of(fleet.config)
    assert needle in msg, msg
    assert msg.startswith(str(fleet.config))


def test_missing_vendor_package_names_file(fleet):
    (fleet.root / "vendor/1e.client-macOS_v5.1.0.12.pkg").unlink()
    msg = error_of(fleet.config)
    assert "vendor.package" in msg and "1e.client-macOS_v5.1.0.12.pkg: no such file" in msg


@pytest.mark.parametrize("table", ["fleet", "vendor", "client", "trust", "devices"])
def test_missing_required_table(fleet, table):
    text = fleet.config.read_text()
    start = text.index(f"[{table}]")
    end = text.find("\n[", start + 1)
    fleet.config.write_text(text[:start] + (text[end + 1:] if end != -1 else ""))
    assert f"missing required table [{table}]" in error_of(fleet.config)


def test_top_level_key_and_non_table(fleet):
    fleet.config.write_text('name = "x"\n' + FLEET_TOML)
    assert "unknown top-level key 'name'" in error_of(fleet.config)
    fleet.config.write_text('targets = 1\n' + FLEET_TOML)
    assert "'targets' must be a table" in error_of(fleet.config)


def test_toml_syntax_error_gives_line(fleet):
    edit(fleet, "build = 3", "build = 3\nthis is not toml")
    msg = error_of(fleet.config)
    assert msg.startswith(f"{fleet.config}:6: invalid TOML")


def test_not_utf8_and_missing_file(fleet, tmp_path):
    fleet.config.write_bytes(b"[fleet]\nname = \"\xff\"\n")
    assert error_of(fleet.config).startswith(f"{fleet.config}:2: not UTF-8")
    msg = error_of(tmp_path / "absent.toml")
    assert "absent.toml: no such file" in msg and "fleetpkg init" in msg
    assert "is a directory" in error_of(tmp_path)


# --- [client] ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "tachyon.acme.local:4000", "t:1", "t:65535", "10.1.2.3:4000", "[2001:db8::1]:4000",
    "tachyon.acme.local:4000;dmz.acme.com:443", "a.example:4000,b.example:4000", "TACHYON01:4000",
])
def test_switch_valid(value):
    assert ";".join(validate_switch(value)) == value.replace(",", ";")


@pytest.mark.parametrize("value", [
    "tachyon.acme.local", "tachyon:0", "tachyon:65536", "tachyon:40x0", ":4000", "tachyon :4000",
    "tachyon:4000;", ";tachyon:4000", "-bad.example:4000", "https://tachyon:4000",
    "999.1.1.1:4000", "[not-ip]:4000", "tach_yon:4000", "tachyon:٤٠٠٠", "a..b:4000", "",
])
def test_switch_invalid(value):
    with pytest.raises(ValueError):
        validate_switch(value)


@pytest.mark.parametrize("value", [
    "https://tachyon.acme.local/Background", "https://tachyon:8443/Background",
    "HTTPS://tachyon/bg", "https://[2001:db8::1]/Background", "https://10.0.0.1/Background",
    "https://a.example/Background;https://dmz.example/Background",
])
def test_background_url_valid(value):
    assert validate_https_url(value)


@pytest.mark.parametrize("value", [
    "http://tachyon/Background", "tachyon/Background", "https://", "https:///Background",
    "ftp://tachyon/x", "https://tachyon:99999/x", "https://user:pw@tachyon/x", "https://a b/x",
    "https://tachyon/x;", "https://bad_host/x",
])
def test_background_url_invalid(value):
    with pytest.raises(ValueError):
        validate_https_url(value)


def test_switch_error_in_config(fleet):
    edit(fleet, 'Switch = "tachyon.acme.local:4000"', 'Switch = "tachyon.acme.local"')
    msg = error_of(fleet.config)
    assert "client.Switch: 'tachyon.acme.local' is not host:port" in msg
    assert "e.g. Switch = " in msg


def test_url_error_in_config(fleet):
    edit(fleet, '"https://tachyon.acme.local/Background"', '"http://tachyon.acme.local/Background"')
    assert "client.BackgroundChannelUrl: 'http://tachyon.acme.local/Background' must start with https://" \
        in error_of(fleet.config)


def test_missing_switch_points_at_typo(fleet):
    edit(fleet, 'Switch = "tachyon.acme.local:4000"', 'Swich = "tachyon.acme.local:4000"')
    msg = error_of(fleet.config)
    assert "[client] missing required key 'Switch'" in msg and "'Swich'" in msg


def test_missing_switch_without_typo_shows_example(fleet):
    edit(fleet, 'Switch = "tachyon.acme.local:4000"', "")
    msg = error_of(fleet.config)
    assert "[client] missing required key 'Switch'" in msg and "e.g. Switch" in msg


def test_client_keys_case_insensitive(fleet):
    edit(fleet, 'Switch = "tachyon.acme.local:4000"', 'SWITCH = "tachyon.acme.local:4000"')
    cfg = load_config(fleet.config)
    assert cfg.client.switch == "tachyon.acme.local:4000"
    assert cfg.client.items[0] == ("SWITCH", "tachyon.acme.local:4000")  # verbatim
    assert cfg.client.get("loggINGlevel") == "Info"


def test_client_case_duplicates_refused(fleet):
    edit(fleet, 'LoggingLevel = "Info"', 'LoggingLevel = "Info"\nlogginglevel = "Debug"')
    msg = error_of(fleet.config)
    assert "'LoggingLevel' and 'logginglevel' differ only in case" in msg


def test_client_passthrough_types_and_order(fleet):
    edit(fleet, 'LoggingLevel = "Info"',
         'LoggingLevel = "Info"\nModule.Inventory.Enabled = true\nLogFileSize = 1048576\n'
         'Zeta = ""\nAlpha = "a;b,c=d x"')
    cfg = load_config(fleet.config)
    assert cfg.client.as_dict() == {
        "Switch": "tachyon.acme.local:4000",
        "BackgroundChannelUrl": "https://tachyon.acme.local/Background",
        "LoggingLevel": "Info", "Module.Inventory.Enabled": "true", "LogFileSize": "1048576",
        "Zeta": "", "Alpha": "a;b,c=d x"}
    assert [k for k, _ in cfg.client.items][-2:] == ["Zeta", "Alpha"]
    assert isinstance(cfg.client, ClientSettings)


def test_client_dotted_keys_flatten(fleet):
    edit(fleet, 'LoggingLevel = "Info"', '"Module.A" = "1"\nModule.B = 2\n[client.Module.C]\nD = "x"')
    cfg = load_config(fleet.config)
    assert cfg.client.items[2:] == (("Module.A", "1"), ("Module.B", "2"), ("Module.C.D", "x"))
    edit(fleet, '"Module.A" = "1"', '"Module.B" = "1"')
    assert "[client] key 'Module.B' is given twice" in error_of(fleet.config)


@pytest.mark.parametrize("line,needle", [
    ('"Logging=Level" = "Info"', "[client] key 'Logging=Level' contains '='"),
    ('"Logging\\nSwitch" = "x"', "[client] key 'Logging\\nSwitch' contains a control character"),
    ('"Log\\u0000" = "x"', "contains a control character"),
    ('" Logging" = "x"', "[client] key ' Logging' has leading or trailing spaces"),
    ('"Logging Level" = "x"', "[client] key 'Logging Level' contains a space"),
    ('"" = "x"', "[client] key '' is empty"),
    ('"#Logging" = "x"', "starts with '#'"),
    ('"[Section]" = "x"', "starts with '['"),
    ('Foo = "Info\\nSwitch=evil:4000"', "client.Foo: value contains a newline"),
    ('Foo = "Info\\rX=1"', "client.Foo: value contains a newline"),
    ('Foo = "a\\u0000b"', "client.Foo: value contains a NUL"),
    ('Foo = "a\\tb"', "client.Foo: value contains a control character"),
    ('Foo = "a\\u2028b"', "client.Foo: value contains a control character"),
    ('Foo = "a\\u0085b"', "client.Foo: value contains a control character"),
    ('Foo = " Info"', "client.Foo: value has leading or trailing spaces"),
    ('Foo = "Info "', "client.Foo: value has leading or trailing spaces"),
    ("Foo = 1.5", "client.Foo: expected a string, integer or boolean, got a float"),
    ("Foo = [1]", "client.Foo: expected a string, integer or boolean, got an array"),
    ("Foo = 2024-01-01", "client.Foo: expected a string, integer or boolean"),
])
def test_client_injection_refused(fleet, line, needle):
    edit(fleet, 'LoggingLevel = "Info"', line)
    msg = error_of(fleet.config)
    assert needle in msg, msg


def test_switch_injection_refused(fleet):
    edit(fleet, 'Switch = "tachyon.acme.local:4000"', 'Switch = "tachyon.acme.local:4000\\nX=1"')
    assert "client.Switch: value contains a newline" in error_of(fleet.config)


# --- devices.csv -------------------------------------------------------------------------------

def csv_error(fleet, text: str) -> str:
    fleet.csv.write_text(text)
    return error_of(fleet.config)


def test_csv_comments_blank_lines_bom_and_columns(fleet, tmp_path):
    (tmp_path / "pw.txt").write_text("x\n")
    fleet.csv.write_bytes(
        "\ufeff# inventory\n\nHostname , PFX,serial,password_env,password_file\n"
        "  # indented comment\n"
        "MAC01.local, pfx/MAC01.local.pfx ,C02XK0AAJGH5,,\n"
        "\n"
        "mac02,pfx/mac02.pfx,,MAC02_PW,\n"
        "mac03,pfx/mac02.pfx,,,pw.txt\n".encode())
    cfg = load_config(fleet.config)
    assert [(d.hostname, d.line, d.serial) for d in cfg.devices] == [
        ("MAC01.local", 5, "C02XK0AAJGH5"), ("mac02", 7, None), ("mac03", 8, None)]
    assert cfg.devices[0].password == PasswordSource("env", "FLEET_PFX_PASSWORD")
    assert cfg.devices[1].password == PasswordSource("env", "MAC02_PW")
    assert cfg.devices[2].password == PasswordSource("file", str(tmp_path / "pw.txt"))


def test_csv_paths_relative_to_csv_folder(fleet, tmp_path):
    inv = tmp_path / "inv"
    (inv / "certs").mkdir(parents=True)
    (inv / "certs/a.pfx").write_bytes((tmp_path / "pfx/mac02.pfx").read_bytes())
    (inv / "list.csv").write_text("hostname,pfx\nmac02,certs/a.pfx\n")
    edit(fleet, 'inventory = "devices.csv"', 'inventory = "inv/list.csv"')
    cfg = load_config(fleet.config)
    assert cfg.devices[0].pfx == inv / "certs/a.pfx"
    assert cfg.devices[0].inventory == str(fleet.root / "inv/list.csv")
    (inv / "list.csv").write_text("hostname,pfx\nmac02,pfx/mac02.pfx\n")  # relative to CSV
    assert load_config(fleet.config).devices[0].pfx == inv / "pfx/mac02.pfx"  # not the fleet's pfx/


def test_csv_pfx_need_not_exist(fleet, tmp_path):
    """A missing .pfx (or a folder in its place) is that device's check finding, not a config error:
    the device loads with the absolute path its .pfx belongs at (where `enroll` writes it)."""
    (tmp_path / "pfx/folder.pfx").mkdir()
    fleet.csv.write_text("hostname,pfx\nMAC01.local,pfx/MAC01.local.pfx\nmac09,pfx/mac09.pfx\n"
                         "mac10,pfx/folder.pfx\nmac11,~/fleetpkg-test-absent/mac11.pfx\n")
    devices = load_config(fleet.config).devices
    assert [(d.hostname, d.pfx, d.line) for d in devices] == [
        ("MAC01.local", tmp_path / "pfx/MAC01.local.pfx", 2), ("mac09", tmp_path / "pfx/mac09.pfx", 3),
        ("mac10", tmp_path / "pfx/folder.pfx", 4),
        ("mac11", Path.home() / "fleetpkg-test-absent/mac11.pfx", 5)]
    assert all(d.pfx.is_absolute() for d in devices)
    assert not devices[1].pfx.exists()


def test_csv_unknown_column_suggests(fleet):
    msg = csv_error(fleet, "# c\nhostname,pfx,serail\nmac02,pfx/mac02.pfx,X\n")
    assert msg.startswith(f"{fleet.csv}:2: unknown column 'serail'")
    assert "did you mean 'serial'?" in msg


def test_csv_without_header(fleet):
    msg = csv_error(fleet, "mac02,pfx/mac02.pfx\n")
    assert f"{fleet.csv}:1: unknown column 'mac02'" in msg
    assert "the first row must be a header: hostname,pfx[,serial][,password_env|password_file]" in msg


@pytest.mark.parametrize("text,needle", [
    ("hostname,pfx\nmac02\n", ":2: row has 1 fields, the header has 2"),
    ("hostname,pfx\nmac02,pfx/mac02.pfx,extra\n", ":2: row has 3 fields"),
    ('hostname,pfx\n"mac02,pfx/mac02.pfx\n', ":2: malformed CSV row"),
    ("hostname,pfx\n,pfx/mac02.pfx\n", ":2: hostname is empty"),
    ("hostname,pfx\nmac 02,pfx/mac02.pfx\n", ":2: hostname 'mac 02' contains a space"),
    ("hostname,pfx\nmac/02,pfx/mac02.pfx\n", ":2: hostname 'mac/02' is not a valid host name"),
    ("hostname,pfx\n-mac02,pfx/mac02.pfx\n", "is not a valid host name"),
    ("hostname,pfx\nmac02,\n", ":2 (device mac02): pfx is empty"),
    ("hostname,pfx,serial\nmac02,pfx/mac02.pfx,C02 X\n", "serial 'C02 X' is not a serial"),
    ("hostname,pfx,password_env,password_file\nmac02,pfx/mac02.pfx,A,devices.csv\n",
     "set either password_env or password_file, not both"),
    ("hostname,pfx,password_env\nmac02,pfx/mac02.pfx,not a name\n",
     "password_env is not an environment variable name"),
    ("hostname,pfx,password_file\nmac02,pfx/mac02.pfx,nope.txt\n", "nope.txt: no such file"),
    ("hostname,hostname,pfx\n", ":1: column 'hostname' appears twice"),
    ("hostname,serial\n", ":1: header has no 'pfx' column"),
    ("# only comments\n\n", "no header row"),
    ("hostname,pfx\n# none\n", "lists no devices"),
])
def test_csv_bad_rows(fleet, text, needle):
    msg = csv_error(fleet, text)
    assert needle in msg, msg
    assert msg.startswith(str(fleet.csv))


def test_csv_not_utf8(fleet):
    fleet.csv.write_bytes(b"hostname,pfx\nmac\xe902,pfx/mac02.pfx\n")
    assert error_of(fleet.config).startswith(f"{fleet.csv}:2: not UTF-8")


def test_duplicate_hostnames_case_insensitive(fleet):
    msg = csv_error(fleet, "hostname,pfx\nmac02,pfx/mac02.pfx\n# x\nMAC01.local,pfx/MAC01.local.pfx\n"
                           "MAC02,pfx/mac02.pfx\n")
    assert msg.startswith(f"{fleet.csv}:5: duplicate hostname 'MAC02': already on line 2 as 'mac02'")


def test_password_never_echoed_in_errors(fleet):
    secret = "Sup3r-Secret-Value!"
    edit(fleet, 'password_env = "FLEET_PFX_PASSWORD"', f'password_env = "{secret}"')
    assert secret not in error_of(fleet.config)
    edit(fleet, f'password_env = "{secret}"', 'password_env = "FLEET_PFX_PASSWORD"')
    msg = csv_error(fleet, f"hostname,pfx,password_env\nmac02,pfx/mac02.pfx,{secret}\n")
    assert secret not in msg and "password_env" in msg


# --- [signing] ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body,needle", [
    ('installer_identity = "s/i.p12"\ninstaller_certificate = "s/c.pem"\ninstaller_key = "s/k.pem"',
     "use either installer_identity (a .p12) or installer_certificate + installer_key"),
    ('profile_certificate = "s/c.pem"', "[signing] missing required key 'profile_key'"),
    ('profile_key = "s/k.pem"', "[signing] missing required key 'profile_certificate'"),
    ('installer_chain = ["s/c.pem"]', "signing.installer_chain: needs installer_certificate"),
    ('installer_password_env = "X"', "installer_password_* is set but no installer identity is"),
    ('installer_identity = "s/c.pem"', "must end in .p12, .pfx"),
    ('installer_identity = "s/none.p12"', "s/none.p12: no such file"),
    ('installer_identity = "s/i.p12"\ninstaller_password_env = "A"\ninstaller_password_file = "s/c.pem"',
     "set either installer_password_env or installer_password_file, not both"),
    ('timestamp_url = "timestamp.apple.com"', "signing.timestamp_url: 'timestamp.apple.com' is not"),
])
def test_signing_errors(fleet, body, needle):
    (fleet.root / "s").mkdir()
    for n in ("i.p12", "c.pem", "k.pem"):
        (fleet.root / "s" / n).write_text("x")
    append(fleet, f"[signing]\n{body}\n")
    msg = error_of(fleet.config)
    assert needle in msg, msg


@pytest.mark.parametrize("body,needle", [
    ("jamf = \"yes\"", "targets.jamf: expected a boolean, got a string"),
    ("munki = 1", "targets.munki: expected a boolean or a table, got an integer"),
    ("munki = { catalogs = [] }", "targets.munki.catalogs: must name at least one"),
    ('munki = { catalogs = ["a/b"] }', "targets.munki.catalogs: 'a/b' is not a catalog name"),
    ('munki = { catalogs = ["a", "a"] }', "lists a catalog twice"),
    ('munki = { catalogs = "testing" }', "targets.munki.catalogs: expected an array"),
    ('munki = { name = "1E Client" }', "targets.munki.name: '1E Client' must be"),
    ('munki = { identities = "yes" }', "targets.munki.identities: expected a boolean"),
])
def test_target_errors(fleet, body, needle):
    append(fleet, f"[targets]\n{body}\n")
    assert needle in error_of(fleet.config)


def test_profiles_wrong_type(fleet):
    append(fleet, '[profiles]\nkey_is_extractable = "no"\n')
    msg = error_of(fleet.config)
    assert "profiles.key_is_extractable: expected a boolean, got a string" in msg
    assert "write key_is_extractable = true or false" in msg


# --- property: whatever [client] accepts renders as exactly its own conf lines ---------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from builder.fleet.config import _Ctx, _load_client  # noqa: E402

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, st.one_of(_text, st.integers(), st.booleans()), max_size=4))
def test_accepted_client_settings_cannot_inject(extra):
    data = {"Switch": "t.example:4000", "BackgroundChannelUrl": "https://t.example/b", **extra}
    ctx = _Ctx("fleet.toml", Path("/"), Path("."))
    try:
        settings_ = _load_client(ctx, data)
    except ConfigError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return
    conf = "".join(f"{k}={v}\n" for k, v in settings_.items)
    parsed = [tuple(line.split("=", 1)) for line in conf.splitlines()]  # strictest line split
    assert parsed == [(k.strip(), v.strip()) for k, v in settings_.items] == list(settings_.items)
    assert all(not k.startswith(("#", ";", "[")) for k, _ in parsed)


# --- [enroll] -------------------------------------------------------------------------------

ENROLL = """[enroll]
scep_url = "http://ndes.acme.local/certsrv/mscep/mscep.dll"
ca_fingerprint = "3F:0A:9C:55:E1:2B:47:D8:6E:B0:19:C4:A2:7D:58:E3:91:0F:6B:C2:D4:85:3A:E7:1C:60:B9:F4:28:5D:A3:0E"
challenge_env = "SCEP_CHALLENGE"
subject = { O = "ACME Corp", OU = "Macs", C = "DE" }
"""


def test_enroll_section(fleet):
    assert load_config(fleet.config).enroll is None
    append(fleet, ENROLL)
    cfg = load_config(fleet.config)
    e = cfg.enroll
    assert e.scep_url == "http://ndes.acme.local/certsrv/mscep/mscep.dll"
    assert e.ca_fingerprint == "3f0a9c55e12b47d86eb019c4a27d58e3910f6bc2d4853ae71c60b9f4285da30e"
    assert e.challenge == ChallengeSource("env", "SCEP_CHALLENGE")
    assert e.subject == (("O", "ACME Corp"), ("OU", "Macs"), ("C", "DE"))
    assert (e.key_size, e.renew_within_days) == (2048, 30)


def test_enroll_challenge_file_and_command(fleet):
    (fleet.root / "secrets").mkdir()
    (fleet.root / "secrets/challenge.txt").write_text("x\n")
    append(fleet, ENROLL.replace('challenge_env = "SCEP_CHALLENGE"',
                                 'challenge_file = "secrets/challenge.txt"'))
    assert load_config(fleet.config).enroll.challenge == ChallengeSource(
        "file", str(fleet.root / "secrets/challenge.txt"))
    edit(fleet, 'challenge_file = "secrets/challenge.txt"',
         "challenge_command = \"scripts/ndes-challenge.sh --user 'svc ndes'\"")
    source = load_config(fleet.config).enroll.challenge
    assert source.kind == "command" and source.per_request
    assert source.argv == (str(fleet.root / "scripts/ndes-challenge.sh"), "--user", "svc ndes")
    assert source.cwd == str(fleet.root)
    edit(fleet, "challenge_command = \"scripts/ndes-challenge.sh --user 'svc ndes'\"",
         'challenge_command = ["ndes-challenge", "-v"]')
    assert load_config(fleet.config).enroll.challenge.argv == ("ndes-challenge", "-v")  # from PATH


@pytest.mark.parametrize("old,new,needle", [
    ('scep_url = "http://', 'scep_url = "ftp://', "enroll.scep_url: 'ftp://ndes.acme.local/certsrv/mscep/mscep.dll' is not a plain http(s)"),
    ("ca_fingerprint = ", "#ca_fingerprint = ", "enroll.ca_fingerprint: is required when scep_url is http://"),
    ('ca_fingerprint = "3F', 'ca_fingerprint = "0123456789012345678901234567890123456789"\n#', "is a SHA-1 thumbprint; give the SHA-256"),
    ('ca_fingerprint = "3F', 'ca_fingerprint = "XY', "enroll.ca_fingerprint: must be hexadecimal digits"),
    ('ca_fingerprint = "3F:', 'ca_fingerprint = "', "has 62 hex digits; a SHA-256 fingerprint has 64"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_env = "SCEP_CHALLENGE"\nchallenge_command = "x"',
     "[enroll]: set one of challenge_env or challenge_command, not 2"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_env = "s3cret value"', "enroll.challenge_env: is not an environment variable name"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_file = "nope.txt"', "nope.txt: no such file"),
    ('challenge_env = "SCEP_CHALLENGE"', "challenge_command = []", "enroll.challenge_command: must be a non-empty command"),
    ('challenge_env = "SCEP_CHALLENGE"', "challenge_command = \"a 'b\"", "enroll.challenge_command: cannot be split"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_env = "SCEP_CHALLENGE"\nkey_size = 1024',
     "enroll.key_size: 1024 is not one of 2048, 3072, 4096 (the vendor's rules need RSA of at least 2048 bits)"),
    ('OU = "Macs"', 'CN = "mac01"', "enroll.subject: must not set CN: it is always the device's hostname"),
    ('OU = "Macs"', 'Ou = "Macs"', "enroll.subject: unknown attribute 'Ou' (did you mean 'OU'?)"),
    ('C = "DE"', 'C = "Germany"', "C = 'Germany' must be a two-letter country code"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_env = "SCEP_CHALLENGE"\nrenew_within_days = -1',
     "enroll.renew_within_days: -1 must be from 0 to 3650 days"),
    ('challenge_env = "SCEP_CHALLENGE"', 'challenge_env = "SCEP_CHALLENGE"\nrenew_days = 3',
     "[enroll] unknown key 'renew_days' (did you mean 'renew_within_days'?)"),
])
def test_enroll_bad_values(fleet, old, new, needle):
    append(fleet, ENROLL)
    edit(fleet, old, new)
    msg = error_of(fleet.config)
    assert needle in msg, msg
    assert msg.startswith(str(fleet.config))


def test_https_needs_no_fingerprint(fleet):
    append(fleet, ENROLL.replace("http://", "https://").replace("ca_fingerprint", "#ca_fingerprint"))
    assert load_config(fleet.config).enroll.ca_fingerprint is None


def test_missing_pfx_loads_for_check_build_and_enroll(fleet):
    pfx = fleet.root / "pfx" / f"{fleet.devices[0]}.pfx"
    pfx.unlink()
    cfg = load_config(fleet.config)
    assert cfg.devices[0].pfx == pfx


# -- [secrets]: age recipients a build seals to ----------------------------------------------

def _age_recipient() -> str:
    import subprocess

    from tests.conftest import require_tool

    key = subprocess.run([require_tool("age-keygen")], check=True, capture_output=True, text=True).stdout
    return subprocess.run([require_tool("age-keygen"), "-y"], input=key, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_secrets_recipients(fleet):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ssh = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " admin@acme"
    age = _age_recipient()
    append(fleet, f'[secrets]\nrecipients = ["{age}", "{ssh}"]\n')
    assert load_config(fleet.config).secrets.recipients == (age, ssh)


def test_no_secrets_table_means_unsealed(fleet):
    assert load_config(fleet.config).secrets.recipients == ()


@pytest.mark.parametrize("value,needle", [
    ('["age1nope"]', "secrets.recipients: 'age1nope' is not a valid age recipient"),
    ('["AGE-SECRET-KEY-1ABC"]', "secrets.recipients: this is a private key, not a recipient"),
    ("[1]", "secrets.recipients: an integer is not a recipient"),
    ('"age1x"', "secrets.recipients: expected an array"),
])
def test_secrets_errors(fleet, value, needle):
    append(fleet, f"[secrets]\nrecipients = {value}\n")
    assert needle in error_of(fleet.config)


def test_secrets_duplicate_and_unknown_key(fleet):
    age = _age_recipient()
    append(fleet, f'[secrets]\nrecipients = ["{age}", " {age}"]\n')
    assert "lists a recipient twice" in error_of(fleet.config)
    edit(fleet, f'recipients = ["{age}", " {age}"]', f'recipient = ["{age}"]')
    assert "unknown key 'recipient'" in error_of(fleet.config)
