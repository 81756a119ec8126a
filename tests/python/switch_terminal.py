"""A pyiso8583-based acquirer terminal: talks to the example payment switch.

Usage: switch_terminal.py HOST PORT basic|storm|silent|burst [N]

Packs requests with pyiso8583's default_ascii spec behind a 2-byte big-endian
length prefix. Prints one line per check; exits 1 if any fails. Test PANs only.

basic: routing by PAN prefix (4 -> issuer A, 5 -> issuer B), approvals and
declines, no route (DE 39 15), an issuer that stays silent (DE 39 91 after
the switch's timeout), 0800 echo answered by the switch, and one duplicate.

storm: every request is sent three times back to back, on two connections;
each answer must be the original's or DE 39 94. Prints `stans A,B,...` of
the requests sent, for the caller to check in the issuer's log that each
reached the issuer exactly once.

silent: one request (STAN 000777) the issuer leaves unanswered; the answer
must be DE 39 91 after the switch's timeout.

burst N: N requests (STANs 300000 on, terminal TERMBRST, visa; every tenth
amount ends in 999, which the issuer leaves unanswered) written back to back
on one connection, then one line `reply STAN CODE` per answer as it
arrives, until the switch closes the connection (for a test that kills it).
"""

import socket
import struct
import sys

import iso8583
from iso8583.specs import default_ascii as spec

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
OTHER = "6011111111111117"


def request(stan, pan, amount, terminal="TERM0042", mti="0100"):
    return {"t": mti, "2": pan, "3": "000000", "4": amount, "7": "1127101530", "11": stan,
            "12": "101530", "13": "1127", "32": "123456", "37": "733110" + stan,
            "41": terminal, "42": "MERCHANT0000042", "49": "978"}


def send(sock, doc):
    raw, _ = iso8583.encode(dict(doc), spec)
    sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))


def recv(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf
    (n,) = struct.unpack(">H", exact(2))
    doc, _ = iso8583.decode(exact(n), spec)
    return doc


class Checks:
    def __init__(self):
        self.failures = 0

    def check(self, what, ok):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures += 1


def basic(host, port, c):
    with socket.create_connection((host, port), timeout=10) as s:
        cases = [
            ("visa approved", request("000101", VISA, "000000010000"), "00"),
            ("visa declined", request("000102", VISA, "000000100001"), "51"),
            ("mastercard approved", request("000103", MASTERCARD, "000000000100"), "00"),
            ("no route", request("000104", OTHER, "000000000100"), "15"),
            ("issuer silent", request("000105", VISA, "000000001999"), "91"),
        ]
        for what, req, code in cases:
            send(s, req)
            resp = recv(s)
            echoed = all(resp.get(k) == req[k] for k in ("2", "4", "7", "11", "32", "41") if k in req)
            c.check(f"{what}: mti {resp['t']} code {resp.get('39')} echo {echoed}",
                    resp["t"] == "0110" and resp.get("39") == code and echoed)
        send(s, {"t": "0800", "7": "1127101530", "11": "000106", "70": "301"})
        resp = recv(s)
        c.check(f"0800 echo: mti {resp['t']} code {resp.get('39')}",
                resp["t"] == "0810" and resp.get("39") == "00" and resp.get("11") == "000106")
        # A duplicate of an answered request gets the original answer again.
        send(s, request("000101", VISA, "000000010000"))
        resp = recv(s)
        c.check(f"duplicate of an answered request: code {resp.get('39')}",
                resp.get("39") == "00" and resp.get("11") == "000101")


def storm(host, port, c):
    stans = []
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(2)]
    try:
        expected = 0
        for i in range(40):
            stan = f"{200 + i:06d}"
            stans.append(stan)
            amount = "000000100001" if i % 4 == 0 else "000000000500"
            req = request(stan, VISA if i % 2 == 0 else MASTERCARD, amount, terminal="TERMSTRM")
            for k in range(3):
                send(conns[k % 2], req)
                expected += 1
        answers = {}
        got = 0
        for s in conns:
            n = sum(1 for i in range(40) for k in range(3) if conns[k % 2] is s)
            for _ in range(n):
                resp = recv(s)
                got += 1
                answers.setdefault(resp["11"], []).append(resp.get("39"))
        c.check(f"every copy answered: {got} of {expected}", got == expected)
        for i, stan in enumerate(stans):
            codes = answers.get(stan, [])
            original = "51" if i % 4 == 0 else "00"
            ok = len(codes) == 3 and original in codes and all(x in (original, "94") for x in codes)
            if not ok:
                c.check(f"stan {stan}: answers {codes}", False)
        c.check("each copy got the original answer or 94", c.failures == 0)
    finally:
        for s in conns:
            s.close()
    print("stans " + ",".join(stans), flush=True)


def silent(host, port, c):
    with socket.create_connection((host, port), timeout=30) as s:
        req = request("000777", VISA, "000000002999")
        send(s, req)
        resp = recv(s)
        c.check(f"silent issuer: mti {resp['t']} code {resp.get('39')}",
                resp["t"] == "0110" and resp.get("39") == "91" and resp.get("11") == "000777")


def burst(host, port, c, n):
    with socket.create_connection((host, port), timeout=60) as s:
        for i in range(n):
            amount = "000000001999" if i % 10 == 9 else "000000000500"
            send(s, request(f"{300000 + i:06d}", VISA, amount, terminal="TERMBRST"))
        print("sent", n, flush=True)
        try:
            while True:
                resp = recv(s)
                print("reply", resp.get("11"), resp.get("39"), flush=True)
        except (EOFError, OSError):
            pass


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = Checks()
    if mode == "burst":
        burst(host, port, c, int(sys.argv[4]))
        return 0
    {"basic": basic, "storm": storm, "silent": silent}[mode](host, port, c)
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
