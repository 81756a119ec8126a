"""Reads fluxrig audit Parquet files with pyarrow (an independent reader).

Usage: audit_read.py FILE.parquet...

Prints one JSON object: {"schema": {column: arrow type}, "compression": [...],
"rows": [{column: value}...]} with `ts` as integer Unix nanoseconds.
"""

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    rows = []
    schema = None
    compression = set()
    for path in sys.argv[1:]:
        f = pq.ParquetFile(path)
        md = f.metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                compression.add(rg.column(c).compression)
        table = f.read()
        schema = {field.name: str(field.type) for field in table.schema}
        ts = table.column("ts").cast(pa.int64())
        table = table.set_column(table.schema.get_field_index("ts"), "ts", ts)
        rows.extend(table.to_pylist())
    json.dump({"schema": schema, "compression": sorted(compression), "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
