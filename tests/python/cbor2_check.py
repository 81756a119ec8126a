"""Independent check of fluxrig's CBOR with cbor2.

Usage: cbor2_check.py MESSAGES.cborseq EXPECTED.jsonl

MESSAGES is a CBOR sequence written by fluxrig; EXPECTED has, per message, the
typed value tree fluxrig meant to encode plus whether every map key in it is
text. For each message this decodes the bytes with cbor2 (never fluxrig),
renders the result in the same typed form and compares; for text-keyed
messages it also checks that cbor2's canonical encoder yields the very same
bytes. Prints every mismatch; exits 1 if there is any.
"""

import collections.abc
import io
import json
import math
import struct
import sys

import cbor2


def typed(v):
    """Render a cbor2-decoded item in the typed JSON form the Rust test writes."""
    if v is True or v is False:
        return {"bool": v}
    if v is None:
        return {"null": 0}
    if v is cbor2.undefined:
        return {"u": 0}
    if isinstance(v, cbor2.CBORSimpleValue):
        return {"s": int(v.value)}
    if isinstance(v, int):
        return {"i": str(v)}
    if isinstance(v, float):
        if math.isnan(v):
            return {"f": "nan"}
        return {"f": struct.pack(">d", v).hex()}
    if isinstance(v, (bytes, bytearray)):
        return {"b": bytes(v).hex()}
    if isinstance(v, str):
        return {"t": v}
    if isinstance(v, (list, tuple)):
        return {"a": [typed(x) for x in v]}
    if isinstance(v, collections.abc.Mapping):
        return {"m": [[typed(k), typed(x)] for k, x in v.items()]}
    if isinstance(v, cbor2.CBORTag):
        return {"g": [str(v.tag), typed(v.value)]}
    raise TypeError(f"unexpected item of type {type(v).__name__}")


def main():
    data = open(sys.argv[1], "rb").read()
    expected = [json.loads(line) for line in open(sys.argv[2])]
    stream = io.BytesIO(data)
    failures = 0
    for n, exp in enumerate(expected):
        start = stream.tell()
        decoded = cbor2.CBORDecoder(stream).decode()
        raw = data[start : stream.tell()]
        got = typed(decoded)
        if got != exp["value"]:
            failures += 1
            print(f"message {n}: value differs\n  cbor2:   {json.dumps(got)}\n  fluxrig: {json.dumps(exp['value'])}")
        if exp["text_keys"]:
            canonical = cbor2.dumps(decoded, canonical=True)
            if canonical != raw:
                failures += 1
                print(f"message {n}: cbor2 canonical bytes differ\n  cbor2:   {canonical.hex()}\n  fluxrig: {raw.hex()}")
    if stream.tell() != len(data):
        failures += 1
        print(f"{len(data) - stream.tell()} bytes left after {len(expected)} messages")
    print(f"checked {len(expected)} messages, {failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
