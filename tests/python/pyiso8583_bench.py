"""pyiso8583 decode + encode of the typical 0100 used by fluxrig's codec
bench (crates/fluxrig-bench/benches/iso8583.rs), for context.

Usage: pyiso8583_bench.py [SECONDS]   prints one line per spec: messages/s
"""

import sys
import time

import iso8583
from iso8583.specs import default, default_ascii

FIELDS = {
    "t": "0100", "2": "4111111111111111", "3": "000000", "4": "000000012500",
    "7": "1127101530", "11": "004711", "12": "101530", "13": "1127", "14": "2812",
    "18": "5411", "19": "250", "22": "051", "23": "001", "25": "00", "32": "12345678",
    "35": "4111111111111111=28122011234500000", "37": "733110004711", "41": "TERM0001",
    "42": "MERCHANT0000001", "43": "FLUXRIG TEST SHOP        PARIS        FR",
    "48": "0021A1B2C3POS-TEST-DATA", "49": "978", "52": "0123456789ABCDEF",
    "55": "9F02060000000125009F03060000000000009F1A020250", "60": "FLUXRIG-BENCH",
    "62": "CUSTOM-PRIVATE-DATA-0001",
}


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    for name, spec in (("default_ascii", default_ascii), ("default", default)):
        wire, _ = iso8583.encode(dict(FIELDS), spec)
        wire = bytes(wire)
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(200):
                doc, _ = iso8583.decode(wire, spec)
                iso8583.encode(doc, spec)
            n += 200
        rate = n / (time.perf_counter() - start)
        print(f"pyiso8583 {name}: {len(wire)} bytes, {rate:,.0f} decode+encode/s")


if __name__ == "__main__":
    main()
