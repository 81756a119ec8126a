//! The archive's table: one row per message event (`docs/audit.md` is the
//! reference for every column).

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder, UInt8Builder,
    UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fluxrig_msg::json::JsonValue;
use fluxrig_msg::{FluxMsg, Value, cbor};

use crate::records::RackRecord;

/// `direction` of an ingress row.
pub const DIR_IN: &str = "in";
/// `direction` of an egress row.
pub const DIR_OUT: &str = "out";
/// `direction` of a dead-letter row.
pub const DIR_DEAD: &str = "dead";
/// `direction` of a completion row.
pub const DIR_DONE: &str = "done";
/// `direction` of a row for a record of kinds 1–4 whose body does not decode.
pub const DIR_INVALID: &str = "invalid";

/// Where the promoted columns are taken from in `data` (dotted paths of the
/// ISO 8583 data layout, `docs/iso8583-data-layout.md`, and of the UNS).
pub mod paths {
    /// `mti`.
    pub const MTI: &str = "mti";
    /// `response_code`.
    pub const RESPONSE_CODE: &str = "response.code";
    /// `amount`.
    pub const AMOUNT: &str = "amount.transaction";
    /// `currency`.
    pub const CURRENCY: &str = "currency.transaction";
    /// `uns_path`.
    pub const UNS_PATH: &str = "uns.path";
    /// `value`.
    pub const VALUE: &str = "value";
    /// Every promoted path with its column, in column order.
    pub const ALL: [(&str, &str); 6] = [
        ("mti", MTI),
        ("response_code", RESPONSE_CODE),
        ("amount", AMOUNT),
        ("currency", CURRENCY),
        ("uns_path", UNS_PATH),
        ("value", VALUE),
    ];
}

/// The column names, in order.
pub const COLUMNS: [&str; 20] = [
    "flux_id",
    "ts",
    "rack",
    "gear",
    "port",
    "direction",
    "protocol",
    "mti",
    "response_code",
    "amount",
    "currency",
    "uns_path",
    "value",
    "ref",
    "meta",
    "data",
    "wal_segment",
    "wal_lsn",
    "kind",
    "reason",
];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("flux_id", DataType::UInt64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
        text("rack"),
        text("gear"),
        text("port"),
        Field::new("direction", DataType::Utf8, false),
        text("protocol"),
        text("mti"),
        text("response_code"),
        Field::new("amount", DataType::Int64, true),
        text("currency"),
        text("uns_path"),
        Field::new("value", DataType::Float64, true),
        Field::new("ref", DataType::UInt64, true),
        text("meta"),
        text("data"),
        Field::new("wal_segment", DataType::UInt64, false),
        Field::new("wal_lsn", DataType::UInt64, false),
        Field::new("kind", DataType::UInt8, false),
        text("reason"),
    ]))
});

/// The Arrow schema of the archive (and of `audit export`).
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// One row: a message event as the archive stores it.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Event {
    /// The message's fluxID (for `done` rows: the completed message's).
    pub flux_id: Option<u64>,
    /// Event time, Unix nanoseconds.
    pub ts: Option<i64>,
    /// The Rack's name.
    pub rack: Option<String>,
    /// The gear that recorded the event.
    pub gear: Option<String>,
    /// The source port (ingress only).
    pub port: Option<String>,
    /// `in`, `out`, `dead`, `done` or `invalid`.
    pub direction: &'static str,
    /// The protocol (see [`protocol`]).
    pub protocol: Option<String>,
    /// ISO 8583 message type indicator.
    pub mti: Option<String>,
    /// Response code.
    pub response_code: Option<String>,
    /// Transaction amount, minor units.
    pub amount: Option<i64>,
    /// Transaction currency.
    pub currency: Option<String>,
    /// Unified Namespace path.
    pub uns_path: Option<String>,
    /// Numeric value.
    pub value: Option<f64>,
    /// fluxID of the message this one answers or derives from.
    pub reference: Option<u64>,
    /// `meta` as a JSON object.
    pub meta: Option<String>,
    /// `data` as JSON (fluxMsg JSON conventions).
    pub data: Option<String>,
    /// Segment number the record was read from.
    pub wal_segment: u64,
    /// The record's LSN.
    pub wal_lsn: u64,
    /// The record's kind byte.
    pub kind: u8,
    /// Dead-letter reason, or why a record did not decode.
    pub reason: Option<String>,
}

impl Event {
    /// The row for a WAL record of kind 1–4; `None` for other kinds (which
    /// the archive skips and counts).
    pub fn from_record(
        rack: Option<&str>,
        segment: u64,
        lsn: u64,
        kind: u8,
        body: &[u8],
    ) -> Option<Event> {
        let base = Event {
            rack: rack.map(str::to_owned),
            wal_segment: segment,
            wal_lsn: lsn,
            kind,
            ..Event::default()
        };
        let decoded = match RackRecord::decode(kind, body) {
            Ok(RackRecord::Other { .. }) => return None,
            Ok(r) => r,
            Err(e) => {
                return Some(Event {
                    direction: DIR_INVALID,
                    reason: Some(e.to_string()),
                    ..base
                });
            }
        };
        Some(match decoded {
            RackRecord::Ingress { gear, port, msg } => Event {
                gear: Some(gear),
                port: Some(port),
                ..Event::of_msg(base, DIR_IN, &msg)
            },
            RackRecord::Egress { gear, msg } => Event {
                gear: Some(gear),
                ..Event::of_msg(base, DIR_OUT, &msg)
            },
            RackRecord::DeadLetter { gear, reason, msg } => Event {
                gear: Some(gear),
                reason: Some(reason),
                ..Event::of_msg(base, DIR_DEAD, &msg)
            },
            RackRecord::Completed { gear, id, ts } => Event {
                flux_id: Some(id.get()),
                ts: nonzero_ts(ts),
                gear: Some(gear),
                direction: DIR_DONE,
                ..base
            },
            RackRecord::Other { .. } => return None,
        })
    }

    fn of_msg(base: Event, direction: &'static str, msg: &FluxMsg) -> Event {
        let data = &msg.data;
        Event {
            flux_id: Some(msg.id.get()),
            ts: nonzero_ts(msg.ts),
            direction,
            protocol: protocol(msg),
            mti: code_at(data, paths::MTI, 4),
            response_code: code_at(data, paths::RESPONSE_CODE, 0),
            amount: amount_at(data, paths::AMOUNT),
            currency: code_at(data, paths::CURRENCY, 3),
            uns_path: text_at(data, paths::UNS_PATH),
            value: number_at(data, paths::VALUE),
            reference: msg.reference.map(fluxrig_msg::FluxId::get),
            meta: Some(meta_json(msg)),
            data: data_json(data),
            ..base
        }
    }
}

fn nonzero_ts(ts: u64) -> Option<i64> {
    (ts != 0).then(|| i64::try_from(ts).unwrap_or(i64::MAX))
}

/// The `protocol` column: `meta.protocol` when set; else `iso8583` when the
/// message carries an ISO 8583 dialect hash (`meta["iso8583.spec"]`) or a
/// text `data.mti`; else `uns` when it has `data.uns.path`; else null.
pub fn protocol(msg: &FluxMsg) -> Option<String> {
    if let Some(p) = msg.meta.get("protocol") {
        return Some(p.to_owned());
    }
    if msg.meta.get("iso8583.spec").is_some() || text_at(&msg.data, paths::MTI).is_some() {
        return Some("iso8583".into());
    }
    if text_at(&msg.data, paths::UNS_PATH).is_some() {
        return Some("uns".into());
    }
    None
}

/// The value at a dotted path of map keys.
pub fn lookup<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |v, key| v.get(key))
}

fn text_at(data: &Value, path: &str) -> Option<String> {
    lookup(data, path)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Text as is; an unsigned integer as decimal digits, zero-padded to `width`.
fn code_at(data: &Value, path: &str, width: usize) -> Option<String> {
    match lookup(data, path)? {
        Value::Text(t) => Some(t.to_string()),
        Value::Integer(i) => i.as_u64().map(|n| format!("{n:0width$}")),
        _ => None,
    }
}

/// An integer; or text of ASCII digits (leading zeros allowed, as ISO 8583
/// sends them), optionally signed `-`/`+` or prefixed `D` (debit, negative)
/// / `C` (credit, positive) as ISO 8583 `x+n` amounts are.
fn amount_at(data: &Value, path: &str) -> Option<i64> {
    match lookup(data, path)? {
        Value::Integer(i) => i.as_i64(),
        Value::Text(t) => parse_amount(t),
        _ => None,
    }
}

fn parse_amount(t: &str) -> Option<i64> {
    let (negative, digits) = match t.as_bytes().first()? {
        b'-' | b'D' => (true, &t[1..]),
        b'+' | b'C' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// A number (integer or float; integers beyond 2^53 round) or a boolean
/// (1.0 / 0.0, as coils and discrete inputs report).
fn number_at(data: &Value, path: &str) -> Option<f64> {
    match lookup(data, path)? {
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(i) => Some(i.get() as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn meta_json(msg: &FluxMsg) -> String {
    let map: serde_json::Map<String, serde_json::Value> = msg
        .meta
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// `data` in the fluxMsg JSON conventions; `null` data is a SQL NULL. A
/// value JSON cannot hold (a map with non-text keys) is kept as
/// `{"$cbor": "<base64 of its deterministic CBOR>"}`.
fn data_json(data: &Value) -> Option<String> {
    if data.is_null() {
        return None;
    }
    Some(serde_json::to_string(&JsonValue(data)).unwrap_or_else(|_| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(cbor::to_vec(data));
        serde_json::json!({ "$cbor": b64 }).to_string()
    }))
}

/// Accumulates events into Arrow columns.
#[derive(Debug)]
pub struct EventBatch {
    flux_id: UInt64Builder,
    ts: TimestampNanosecondBuilder,
    rack: StringBuilder,
    gear: StringBuilder,
    port: StringBuilder,
    direction: StringBuilder,
    protocol: StringBuilder,
    mti: StringBuilder,
    response_code: StringBuilder,
    amount: Int64Builder,
    currency: StringBuilder,
    uns_path: StringBuilder,
    value: Float64Builder,
    reference: UInt64Builder,
    meta: StringBuilder,
    data: StringBuilder,
    wal_segment: UInt64Builder,
    wal_lsn: UInt64Builder,
    kind: UInt8Builder,
    reason: StringBuilder,
    rows: usize,
}

impl Default for EventBatch {
    fn default() -> Self {
        EventBatch::new()
    }
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> EventBatch {
        EventBatch {
            flux_id: UInt64Builder::new(),
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            rack: StringBuilder::new(),
            gear: StringBuilder::new(),
            port: StringBuilder::new(),
            direction: StringBuilder::new(),
            protocol: StringBuilder::new(),
            mti: StringBuilder::new(),
            response_code: StringBuilder::new(),
            amount: Int64Builder::new(),
            currency: StringBuilder::new(),
            uns_path: StringBuilder::new(),
            value: Float64Builder::new(),
            reference: UInt64Builder::new(),
            meta: StringBuilder::new(),
            data: StringBuilder::new(),
            wal_segment: UInt64Builder::new(),
            wal_lsn: UInt64Builder::new(),
            kind: UInt8Builder::new(),
            reason: StringBuilder::new(),
            rows: 0,
        }
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends a row.
    pub fn push(&mut self, e: &Event) {
        self.flux_id.append_option(e.flux_id);
        self.ts.append_option(e.ts);
        self.rack.append_option(e.rack.as_deref());
        self.gear.append_option(e.gear.as_deref());
        self.port.append_option(e.port.as_deref());
        self.direction.append_value(e.direction);
        self.protocol.append_option(e.protocol.as_deref());
        self.mti.append_option(e.mti.as_deref());
        self.response_code.append_option(e.response_code.as_deref());
        self.amount.append_option(e.amount);
        self.currency.append_option(e.currency.as_deref());
        self.uns_path.append_option(e.uns_path.as_deref());
        self.value.append_option(e.value);
        self.reference.append_option(e.reference);
        self.meta.append_option(e.meta.as_deref());
        self.data.append_option(e.data.as_deref());
        self.wal_segment.append_value(e.wal_segment);
        self.wal_lsn.append_value(e.wal_lsn);
        self.kind.append_value(e.kind);
        self.reason.append_option(e.reason.as_deref());
        self.rows += 1;
    }

    /// The rows as a record batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.flux_id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.rack.finish()),
            Arc::new(self.gear.finish()),
            Arc::new(self.port.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.mti.finish()),
            Arc::new(self.response_code.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.uns_path.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.reference.finish()),
            Arc::new(self.meta.finish()),
            Arc::new(self.data.finish()),
            Arc::new(self.wal_segment.finish()),
            Arc::new(self.wal_lsn.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.reason.finish()),
        ];
        self.rows = 0;
        // The columns are built to the schema, so this cannot fail.
        RecordBatch::try_new(schema(), columns)
            .unwrap_or_else(|e| unreachable!("event columns do not match the archive schema: {e}"))
    }
}

/// Decodes a WAL record into `batch`; returns whether it made a row.
pub(crate) fn push_record(
    batch: &mut EventBatch,
    rack: Option<&str>,
    segment: u64,
    lsn: u64,
    kind: u8,
    body: &[u8],
) -> bool {
    match Event::from_record(rack, segment, lsn, kind, body) {
        Some(e) => {
            batch.push(&e);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records;
    use fluxrig_msg::{FluxId, Map, Meta};

    fn data(json: &str) -> Value {
        fluxrig_msg::json::value(&serde_json::from_str(json).unwrap(), "data").unwrap()
    }

    #[test]
    fn iso8583_fields_are_promoted() {
        let mut m = FluxMsg::new(
            FluxId::from_raw(5),
            data(
                r#"{"mti":"0110","response":{"code":"00"},"amount":{"transaction":"000000012500"},
                    "currency":{"transaction":"978"}}"#,
            ),
        );
        m.meta = [("iso8583.spec", "abc")].into_iter().collect::<Meta>();
        let body = records::encode_egress("issuer", &m);
        let e = Event::from_record(Some("edge-1"), 3, 42, records::EGRESS, &body).unwrap();
        assert_eq!(e.direction, "out");
        assert_eq!(e.protocol.as_deref(), Some("iso8583"));
        assert_eq!(e.mti.as_deref(), Some("0110"));
        assert_eq!(e.response_code.as_deref(), Some("00"));
        assert_eq!(e.amount, Some(12_500));
        assert_eq!(e.currency.as_deref(), Some("978"));
        assert_eq!(e.ts, None);
        assert_eq!(e.meta.as_deref(), Some(r#"{"iso8583.spec":"abc"}"#));
        assert_eq!((e.wal_segment, e.wal_lsn, e.kind), (3, 42, 2));
    }

    #[test]
    fn other_shapes_of_promoted_fields() {
        assert_eq!(parse_amount("D000000000150"), Some(-150));
        assert_eq!(parse_amount("C12"), Some(12));
        assert_eq!(parse_amount("-7"), Some(-7));
        assert_eq!(parse_amount("12.5"), None);
        assert_eq!(parse_amount(""), None);
        assert_eq!(parse_amount("D"), None);
        let d = data(
            r#"{"mti":100,"currency":{"transaction":978},"amount":{"transaction":1250},
                "uns":{"path":"acme/plant1/line2/temp"},"value":21.5}"#,
        );
        assert_eq!(code_at(&d, paths::MTI, 4).as_deref(), Some("0100"));
        assert_eq!(code_at(&d, paths::CURRENCY, 3).as_deref(), Some("978"));
        assert_eq!(amount_at(&d, paths::AMOUNT), Some(1250));
        assert_eq!(number_at(&d, paths::VALUE), Some(21.5));
        let m = FluxMsg::new(
            FluxId::from_raw(1),
            data(r#"{"uns":{"path":"a/b"},"value":true}"#),
        );
        assert_eq!(protocol(&m).as_deref(), Some("uns"));
        assert_eq!(number_at(&m.data, paths::VALUE), Some(1.0));
        let mut m = FluxMsg::new(FluxId::from_raw(1), Value::Null);
        assert_eq!(protocol(&m), None);
        m.meta.insert("protocol", "http");
        assert_eq!(protocol(&m).as_deref(), Some("http"));
    }

    #[test]
    fn non_json_data_is_kept_as_cbor() {
        let mut map = Map::new();
        map.insert(Value::from(1), Value::from("x"));
        let json = data_json(&Value::Map(map)).unwrap();
        assert!(json.starts_with(r#"{"$cbor":""#), "{json}");
        assert_eq!(data_json(&Value::Null), None);
    }

    #[test]
    fn undecodable_and_bookkeeping_records() {
        let e = Event::from_record(None, 0, 1, records::INGRESS, b"\x00").unwrap();
        assert_eq!(e.direction, "invalid");
        assert!(e.reason.unwrap().contains("ingress record"));
        assert!(Event::from_record(None, 0, 1, 9, b"anything").is_none());
        let mut b = EventBatch::new();
        assert!(!push_record(&mut b, None, 0, 1, 9, b""));
        assert!(push_record(
            &mut b,
            None,
            0,
            2,
            records::COMPLETED,
            &records::encode_completed("g", FluxId::from_raw(3), 4)
        ));
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), schema());
    }
}
