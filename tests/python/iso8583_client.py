"""A pyiso8583-based acquirer terminal: talks to an issuer over TCP.

Usage: iso8583_client.py HOST PORT

Packs requests with pyiso8583's default_ascii spec behind a 2-byte big-endian
length prefix, sends them on one connection, and checks each answer (or the
absence of one) against the issuer simulator's rules. Prints one line per
check; exits 1 if any fails. Test PANs only.
"""

import socket
import struct
import sys

import iso8583
from iso8583.specs import default_ascii as spec

PAN = "4111111111111111"


def request(mti, stan, amount=None, extra=None):
    d = {"t": mti, "2": PAN, "3": "000000", "7": "1127101530", "11": stan,
         "12": "101530", "13": "1127", "37": "733110" + stan, "41": "TERM0042",
         "42": "MERCHANT0000042", "49": "978"}
    if amount is not None:
        d["4"] = amount
    if extra:
        d.update(extra)
    return d


def send(sock, doc):
    raw, _ = iso8583.encode(dict(doc), spec)
    sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))


def recv(sock):
    head = b""
    while len(head) < 2:
        chunk = sock.recv(2 - len(head))
        if not chunk:
            raise EOFError("connection closed")
        head += chunk
    (n,) = struct.unpack(">H", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise EOFError("connection closed")
        body += chunk
    doc, _ = iso8583.decode(body, spec)
    return doc


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    failures = 0

    def check(what, ok):
        nonlocal failures
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures += 1

    with socket.create_connection((host, port), timeout=5) as s:
        cases = [
            ("0100 approved", request("0100", "000001", "000000010000"), "0110", "00"),
            ("0100 declined", request("0100", "000002", "000000100001"), "0110", "51"),
            ("0200 approved", request("0200", "000003", "000000000100"), "0210", "00"),
            ("0800 echo", {"t": "0800", "7": "1127101530", "11": "000004", "70": "301"}, "0810", "00"),
            ("0400 reversal", request("0400", "000005", "000000000100"), "0410", "00"),
            ("0420 advice", request("0420", "000006", "000000000100"), "0430", "00"),
            ("0421 repeat", request("0421", "000007", "000000000100"), "0430", "00"),
        ]
        for what, req, mti, code in cases:
            send(s, req)
            resp = recv(s)
            echoed = all(resp.get(k) == req[k] for k in ("2", "3", "4", "7", "11", "12", "13", "37", "41", "42", "49") if k in req)
            check(f"{what}: mti {resp['t']} code {resp.get('39')} echo {echoed}",
                  resp["t"] == mti and resp.get("39") == code and echoed)
        # An amount ending in 999 gets no answer: the next reply is for the next request.
        send(s, request("0100", "000008", "000000001999"))
        send(s, request("0100", "000009", "000000000500"))
        resp = recv(s)
        check(f"999 unanswered: next reply is stan {resp.get('11')}", resp.get("11") == "000009")
        s.settimeout(0.5)
        try:
            extra = recv(s)
            check(f"no late reply for 999 (got stan {extra.get('11')})", False)
        except (socket.timeout, TimeoutError):
            check("no late reply for 999", True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
