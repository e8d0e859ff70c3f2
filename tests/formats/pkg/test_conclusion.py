"""onConclusion values: Apple's four actions, productbuild's lowercase "none", and their order."""

from __future__ import annotations

import pytest

from builder.formats.pkg import conclusion


@pytest.mark.parametrize("value,expected", [
    (None, "None"), ("", "None"), ("none", "None"), ("None", "None"), (" RequireRestart ", "RequireRestart"),
    ("requirelogout", "RequireLogout"), ("RequireShutdown", "RequireShutdown"), ("RecommendRestart", None),
    ("restart", None),
])
def test_canonical(value, expected):
    assert conclusion.canonical(value) == expected


def test_strongest_follows_shutdown_restart_logout_none():
    assert conclusion.strongest([]) == "None"
    assert conclusion.strongest(["none", "RequireLogout", None]) == "RequireLogout"
    assert conclusion.strongest(["RequireRestart", "RequireLogout"]) == "RequireRestart"
    assert conclusion.strongest(["RequireLogout", "RequireShutdown", "RequireRestart"]) == "RequireShutdown"
    assert conclusion.strongest(["RecommendRestart"]) == "None"  # not Apple's: counts as nothing


@pytest.mark.parametrize("action,expected", [
    ("none", "None"), (None, "None"), ("logout", "RequireLogout"), ("restart", "RequireRestart"),
    ("shutdown", "RequireShutdown"), ("Restart", "RequireRestart"), ("reboot", "None"),
])
def test_postinstall_action(action, expected):
    assert conclusion.from_postinstall_action(action) == expected


def test_words_and_verbs():
    assert conclusion.words("RequireRestart") == "restart required"
    assert conclusion.words("none") == "nothing required"
    assert [conclusion.verb(a) for a in conclusion.ACTIONS] == ["", "log out", "restart", "shut down"]
