"""What Installer asks of the Mac once a package is installed: nothing, a logout, a restart or a shutdown.

A Distribution says it per pkg-ref (`onConclusion`, on any pkg-ref element of that id); a component's
PackageInfo says it as `postinstall-action`, and the Distribution's value should be at least that
strong (Apple's packaging guide: the distribution's post-install action is greater than or equal to the
package's). A product needs the strongest action of the components it installs:
RequireShutdown > RequireRestart > RequireLogout > None.
"""

from __future__ import annotations

from typing import Iterable

NONE = "None"
ACTIONS = (NONE, "RequireLogout", "RequireRestart", "RequireShutdown")  # weakest first
_BY_LOWER = {a.lower(): a for a in ACTIONS}  # productbuild itself writes "none"
_POSTINSTALL = {"logout": "RequireLogout", "restart": "RequireRestart", "shutdown": "RequireShutdown"}
_WORDS = {NONE: "nothing required", "RequireLogout": "logout required", "RequireRestart": "restart required",
          "RequireShutdown": "shutdown required"}
_VERBS = {NONE: "", "RequireLogout": "log out", "RequireRestart": "restart", "RequireShutdown": "shut down"}


def canonical(value: str | None) -> str | None:
    """Apple's spelling of an onConclusion value (absent or empty means None); None when it is not one."""
    if value is None or not value.strip():
        return NONE
    return _BY_LOWER.get(value.strip().lower())


def from_postinstall_action(action: str | None) -> str:
    """PackageInfo's postinstall-action (none, logout, restart, shutdown) as an onConclusion value."""
    return _POSTINSTALL.get((action or "").strip().lower(), NONE)


def strongest(values: Iterable[str | None]) -> str:
    """The strongest known action among `values` (unknown spellings count as None)."""
    return max((canonical(v) or NONE for v in values), key=ACTIONS.index, default=NONE)


def words(action: str) -> str:
    """"restart required" and the like, for people."""
    return _WORDS.get(canonical(action) or NONE, _WORDS[NONE])


def verb(action: str) -> str:
    """"restart", "log out", "shut down" ("" for None)."""
    return _VERBS.get(canonical(action) or NONE, "")
