"""builder.certs.memo.by_object: facts remembered per certificate object, never handed to another."""

from __future__ import annotations

import gc
import weakref

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from builder.certs.memo import by_object
from tests.certs import factory


def test_same_objects_hit_equal_copies_are_worked_out_again():
    calls = []

    @by_object(maxsize=8)
    def fact(cert, other):
        calls.append((cert, other))
        return cert.serial_number - other.serial_number

    ca = factory.make_ca().certificate
    dev = factory.make_device_cert(factory.make_intermediate(factory.make_ca()), "MAC01").certificate
    copy = x509.load_der_x509_certificate(ca.public_bytes(Encoding.DER))
    assert copy == ca and copy is not ca
    assert fact(ca, dev) == fact(ca, dev) == ca.serial_number - dev.serial_number
    assert len(calls) == 1
    assert fact(copy, dev) == fact(ca, dev)  # equal, another object: the same answer, worked out again
    assert len(calls) == 2
    assert fact(dev, ca) == -fact(ca, dev)  # argument order is part of the key
    assert len(calls) == 3


def test_remember_and_forget_when_full():
    @by_object(maxsize=2)
    def fact(obj):
        return ("computed", obj)

    a, b, c = object(), object(), object()
    assert fact.remember("told", a) == "told"
    assert fact(a) == "told"
    fact(b)  # full now: the next entry clears the memo first
    fact(c)
    assert fact(a) == ("computed", a)


def test_remembered_objects_stay_alive_so_their_ids_are_not_reused():
    """A memo keyed by id() would answer for a new object that took a dead one's id: entries hold
    their objects, and a hit must be the very object."""
    class Thing:
        def __init__(self, n):
            self.n = n

    @by_object(maxsize=8)
    def fact(obj):
        return obj.n

    first = Thing(1)
    alive = weakref.ref(first)
    assert fact(first) == 1
    del first
    gc.collect()
    assert alive() is not None  # held by the memo
    fact.cache_clear()
    gc.collect()
    assert alive() is None
    assert fact(Thing(2)) == 2
