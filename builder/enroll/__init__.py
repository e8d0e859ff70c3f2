"""`fleetpkg enroll`: device certificates over SCEP (RFC 8894). scep.py holds the messages,
transport.py the HTTP exchange, fleet.py which devices to enrol and how their .pfx is written."""
