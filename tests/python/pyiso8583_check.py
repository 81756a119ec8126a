"""Differential check of fluxrig's ISO 8583 codec against pyiso8583.

Usage: pyiso8583_check.py CASES.jsonl > PACKED.jsonl
       pyiso8583_check.py --dump NAME      (prints pyiso8583's spec NAME as JSON)

The first line of CASES is {"spec": NAME or SPEC}: NAME is one of
pyiso8583's own specs ("default", "default_ascii"), SPEC a spec dict. Each
further line is {"fields": {...}, "wire": HEX}: fields in pyiso8583's form
("t" for the MTI, "2".."128" as text, binary fields as hex) and the bytes
fluxrig packed them into.

For each case this unpacks fluxrig's bytes with pyiso8583 and compares the
fields, then packs the fields with pyiso8583 and prints {"wire": HEX} (the
Rust test unpacks those with fluxrig and compares the bytes). Mismatches go
to stderr; exits 1 if there is any.
"""

import json
import sys

import iso8583
from iso8583.specs import default, default_ascii

NAMED = {"default": default, "default_ascii": default_ascii}


def main() -> int:
    if sys.argv[1] == "--dump":
        json.dump(NAMED[sys.argv[2]], sys.stdout)
        return 0
    bad = 0
    out = sys.stdout
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.loads(f.readline())["spec"]
        spec = NAMED[spec] if isinstance(spec, str) else spec
        for n, line in enumerate(f, 1):
            case = json.loads(line)
            fields = case["fields"]
            wire = bytes.fromhex(case["wire"])
            try:
                dec, _ = iso8583.decode(wire, spec)
                dec.pop("p", None)
                dec.pop("1", None)
                if dec != fields:
                    keys = sorted(set(dec) ^ set(fields)) or sorted(
                        k for k in fields if dec.get(k) != fields[k]
                    )
                    print(f"case {n}: pyiso8583 unpacks other fields: {keys}", file=sys.stderr)
                    bad += 1
            except iso8583.DecodeError as e:
                print(f"case {n}: pyiso8583 cannot unpack: {e}", file=sys.stderr)
                bad += 1
            try:
                packed, _ = iso8583.encode(dict(fields), spec)
                out.write(json.dumps({"wire": bytes(packed).hex()}) + "\n")
            except iso8583.EncodeError as e:
                print(f"case {n}: pyiso8583 cannot pack: {e}", file=sys.stderr)
                out.write(json.dumps({"wire": ""}) + "\n")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
