"""The readiness report: weekly expiry counts, escaping, determinism, self-containment, and the
page itself in headless Chromium (table shows every device, the filter box filters, screenshot)."""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import html.parser
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.certs import RULES
from builder.cli.report import WEEKS, render_report, weekly_expiries, write_report
from tests.certs import factory as certfactory
from tests.conftest import REPO
from tests.fleetfactory import NOW, PASSWORD, make_device, make_fleet, write_pfx

AT = NOW.strftime("%Y-%m-%d")
UTC = dt.timezone.utc
SCREENSHOT_DIR = Path(os.environ.get("FLEETPKG_ARTIFACTS", tempfile.gettempdir())) / "fleetpkg-report-test"


# -- stand-ins for checking.DeviceResult (same attributes the report reads) --------------------

@dataclass(frozen=True)
class F:
    rule: str
    severity: str
    message: str


@dataclass(frozen=True)
class R:
    hostname: str
    ok: bool
    not_after: dt.datetime | None
    findings: tuple = ()

    @property
    def errors(self):
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self):
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def status(self):
        return "FAIL" if not self.ok else ("warn" if self.warnings else "ok")


T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_weekly_buckets_are_half_open_seven_day_windows():
    day = dt.timedelta(days=1)
    results = [
        R("a", True, T0 + 1 * day),            # week 0
        R("b", True, T0 + 7 * day - dt.timedelta(seconds=1)),  # still week 0
        R("c", True, T0 + 7 * day),            # week 1 starts exactly here
        R("d", True, T0 + 25 * 7 * day + day),  # week 25, the last charted
        R("e", True, T0 + 26 * 7 * day),       # after the chart
        R("f", False, T0),                     # expiring at the check moment counts as expired
        R("g", False, T0 - 400 * day),         # long expired
        R("h", False, None),                   # no readable certificate: not charted
    ]
    counts, expired, later = weekly_expiries(results, T0)
    assert len(counts) == WEEKS == 26
    assert counts[0] == 2 and counts[1] == 1 and counts[25] == 1 and sum(counts) == 4
    assert (expired, later) == (2, 1)


class _Parse(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: dict[str, list[str]] = {}
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self._stack:
            while self._stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self._stack:
            self.data.setdefault(self._stack[-1], []).append(data)


def _parsed(text: str) -> _Parse:
    p = _Parse()
    p.feed(text)
    p.close()
    return p


HOSTILE = '<img src=x onerror="alert(1)">&amp;</td></tr><script>alert(2)</script>'


def test_everything_from_certificates_is_escaped():
    results = [R(HOSTILE, False, T0 + dt.timedelta(days=3),
                 (F("subject-hostname", "error", f"the certificate holds CN {HOSTILE!r}"),
                  F(HOSTILE, "warning", HOSTILE)))]
    text = render_report(HOSTILE, results, T0, RULES)
    assert "<img" not in text and "alert(2)</script>" not in text and "<script>alert" not in text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;amp;&lt;/td&gt;" in text
    page = _parsed(text)
    assert [t for t, _ in page.tags].count("script") == 1  # only the report's own
    assert [t for t, _ in page.tags].count("tr") == 2  # header + the one device
    assert not [t for t, _ in page.tags if t == "img"]
    # the hostile host name survives as text, exactly
    assert HOSTILE in "".join(page.data.get("td", []))


def test_self_contained_and_pinned_by_csp():
    results = [R("mac01", True, T0 + dt.timedelta(days=40))]
    text = render_report("acme", results, T0, RULES)
    page = _parsed(text)
    fetching = {"img", "link", "iframe", "object", "embed", "audio", "video", "source", "base", "use", "image"}
    assert not [t for t, _ in page.tags if t in fetching]
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "background"):
            assert name not in attrs, (tag, attrs)
    assert "url(" not in text and "@import" not in text and "@font-face" not in text
    (csp,) = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in csp
    script = re.search(r"<script>(.*?)</script>", text, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)

    def pin(body: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
    assert f"script-src {pin(script)}" in csp and f"style-src {pin(style)}" in csp


def test_rules_with_findings_come_first_with_their_fix():
    results = [R("mac01", False, T0, (F("validity", "error", "expired"),)),
               R("mac02", True, T0 + dt.timedelta(days=9), (F("validity", "warning", "soon"),
                                                            F("crl-http", "warning", "x")))]
    text = render_report("acme", results, T0, RULES)
    ids = re.findall(r'<div class="rule" id="rule-([a-z-]+)">', text)
    assert sorted(ids) == sorted(RULES)
    assert ids[:2] == [i for i in RULES if i in ("validity", "crl-http")]
    plain = html.unescape(text)
    for rule in RULES.values():
        assert rule.fix in plain and rule.explanation in plain


# -- end to end through `fleetpkg check --report` ------------------------------------------------

def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), FLEET_PFX_PASSWORD=PASSWORD)
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """40 Macs expiring across the next year (three within 30 days), two failing the hostname rule,
    one of them with markup in its certificate's CN and SAN."""
    root = tmp_path_factory.mktemp("report")
    hosts = [f"mac{i:02d}.acme.test" for i in range(40)]
    f = make_fleet(root, hosts)
    for i, h in enumerate(hosts):
        key, cert = make_device(f.ca, h, days=10 + 9 * i)  # valid from NOW - 1 day
        write_pfx(root / "pfx" / f"{h}.pfx", key, cert)
    key, cert = make_device(f.ca, "not-mac05")
    write_pfx(root / "pfx" / "mac05.acme.test.pfx", key, cert)
    ca = certfactory.Issued(f.ca.cert, f.ca.key)
    odd = certfactory.make_device_cert(ca, "mac06.acme.test", cn="<b>mac06</b>&co", san_dns=["<i>x</i>"])
    (root / "pfx" / "mac06.acme.test.pfx").write_bytes(certfactory.make_pfx(
        odd.certificate, odd.key, PASSWORD.encode(), encryption="aes"))
    return f


def test_check_writes_the_report_and_it_is_deterministic(fleet, tmp_path):
    first, second = tmp_path / "a.html", tmp_path / "b.html"
    r1 = run("check", "fleet.toml", "--at", AT, "--report", str(first), cwd=fleet.root)
    r2 = run("check", "fleet.toml", "--at", AT, "--jobs", "1", "--json", "--report", str(second), cwd=fleet.root)
    assert r1.returncode == 1 and r2.returncode == 1, (r1.stderr, r2.stderr)
    json.loads(r2.stdout)  # --json still prints only its document
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    for h in fleet.devices:
        assert f">{h}</td>" in text
    assert "&lt;b&gt;mac06&lt;/b&gt;&amp;co" in text and "<b>mac06" not in text
    assert text.count('<tr class="FAIL"') == 2  # mac05 (wrong name), mac06 (markup CN)
    assert text.count('<tr class="warn"') == 3  # mac00-02 expire within 30 days
    assert '<b id="count-devices">40</b>' in text and '<b id="count-failed">2</b>' in text


def test_unwritable_report_path_is_one_error_line(fleet, tmp_path):
    r = run("check", "fleet.toml", "--at", AT, "--report", str(tmp_path / "no" / "such" / "r.html"), cwd=fleet.root)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--report" in r.stderr


# -- headless Chromium ---------------------------------------------------------------------------

def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """The Chrome DevTools Protocol over --remote-debugging-pipe (fd 3 in, fd 4 out; NUL framed)."""

    def __init__(self, binary: str, url: str, profile: Path):
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        # above fd 4, so moving them onto 3 and 4 in the child cannot clobber one another
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--window-size=1280,1400",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", url]

        def wire():  # runs in the child before exec; only fds 0-4 are inheritable there
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False)
        for fd in (to_browser_r, from_browser_w, high_r, high_w):
            os.close(fd)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._messages(deadline):
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply["result"]
                self.events.append(reply)

    def _messages(self, deadline: float):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("Chromium did not answer")
        ready, _, _ = select.select([self._r], [], [], left)
        if ready:
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise AssertionError("Chromium closed the DevTools pipe")
            self._buf += chunk
        *whole, self._buf = self._buf.split(b"\0")
        return [json.loads(m) for m in whole if m]

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except (AssertionError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def _page_session(cdp: DevTools) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pages = [t for t in cdp.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        if pages:
            return cdp.call("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True})["sessionId"]
        time.sleep(0.1)
    raise AssertionError("no page target")


def _eval(cdp: DevTools, session: str, expression: str):
    reply = cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
    if "exceptionDetails" in reply:
        raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
    return reply["result"].get("value")


VISIBLE = "Array.from(document.querySelectorAll('#devices tbody tr')).filter(r => !r.hidden && r.offsetParent !== null).map(r => r.cells[0].textContent)"


def test_report_in_headless_chromium(fleet, tmp_path):
    binary = find_chromium()
    if binary is None:
        msg = "Chromium not found (apt-get install chromium): the report's browser test did not run"
        if os.environ.get("CI"):  # .ci/run installs chromium: its absence there is a broken install
            pytest.fail(msg)
        print(msg)
        pytest.skip(msg)
    report = tmp_path / "report.html"
    r = run("check", "fleet.toml", "--at", AT, "--report", str(report), cwd=fleet.root)
    assert r.returncode == 1, r.stderr
    cdp = DevTools(binary, report.as_uri(), tmp_path / "chromium-profile")
    try:
        session = _page_session(cdp)
        cdp.call("Runtime.enable", session=session)
        deadline = time.monotonic() + 30
        # the page target starts on about:blank (already "complete"): wait for the report itself
        while _eval(cdp, session, "[location.href, document.readyState]") != [report.as_uri(), "complete"]:
            assert time.monotonic() < deadline, "the report did not finish loading"
            time.sleep(0.1)

        # every device is in the table, in inventory order, and the script ran (CSP hash pinned)
        assert _eval(cdp, session, VISIBLE) == fleet.devices
        assert _eval(cdp, session, "document.getElementById('shown').textContent") == "40"
        bars = _eval(cdp, session, "Array.from(document.querySelectorAll('#timeline rect.bar')).map(b => [Number(b.dataset.count), b.getBBox().height > 0])")
        assert len(bars) == 26 and sum(c for c, _ in bars) > 0 and all(drawn == (c > 0) for c, drawn in bars)

        # type into the filter box: only matching rows stay visible
        _eval(cdp, session, "document.getElementById('filter').focus()")
        for ch in "mac1":
            cdp.call("Input.dispatchKeyEvent", {"type": "keyDown", "text": ch, "key": ch}, session)
            cdp.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": ch}, session)
        assert _eval(cdp, session, "document.getElementById('filter').value") == "mac1"
        expected = [h for h in fleet.devices if "mac1" in h]
        assert _eval(cdp, session, VISIBLE) == expected and len(expected) == 10
        assert _eval(cdp, session, "document.getElementById('shown').textContent") == "10"

        # filter on a rule id (text in the failed-rules column), then clear
        _eval(cdp, session, "var f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))")
        cdp.call("Input.insertText", {"text": "subject-hostname"}, session)
        assert _eval(cdp, session, VISIBLE) == ["mac05.acme.test", "mac06.acme.test"]
        _eval(cdp, session, "var f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))")
        assert len(_eval(cdp, session, VISIBLE)) == 40

        # sort by expiry, descending after a second click
        _eval(cdp, session, "document.querySelectorAll('#devices th button')[3].click()")
        asc = _eval(cdp, session, VISIBLE)
        _eval(cdp, session, "document.querySelectorAll('#devices th button')[3].click()")
        assert _eval(cdp, session, VISIBLE) == list(reversed(asc)) and asc[0] == "mac00.acme.test"

        # status filter, then back to everything for the screenshot
        _eval(cdp, session, "var s = document.getElementById('status-filter'); s.value = 'FAIL'; s.dispatchEvent(new Event('change'))")
        assert sorted(_eval(cdp, session, VISIBLE)) == ["mac05.acme.test", "mac06.acme.test"]
        _eval(cdp, session, "var s = document.getElementById('status-filter'); s.value = ''; s.dispatchEvent(new Event('change'))")
        _eval(cdp, session, "document.querySelectorAll('#devices th button')[3].click()")  # ascending again

        shot = base64.b64decode(cdp.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
        assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 10_000
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        (SCREENSHOT_DIR / "report.png").write_bytes(shot)
        print(f"screenshot: {SCREENSHOT_DIR / 'report.png'}")

        # nothing was blocked or fetched: no CSP violations, no console errors
        problems = [e for e in cdp.events if e.get("method") in ("Runtime.exceptionThrown",)
                    or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")]
        assert problems == []
    finally:
        cdp.close()
