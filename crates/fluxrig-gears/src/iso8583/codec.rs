//! `iso8583_codec`: ISO 8583 bytes ⇄ the documented `data` layout.

use std::sync::Arc;

use bytes::Bytes;
use fluxrig_gear::{
    BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Gear, GearError, GearIo,
    GearKind, Role,
};
use fluxrig_iso8583::{META_SPEC, Spec, encode_value, to_value};
use fluxrig_msg::FluxMsg;
use schemars::JsonSchema;
use serde::Deserialize;

use super::{default_spec, load_spec};

/// Which way `iso8583_codec` converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// `raw` (the message bytes) → `data` (the documented layout).
    Decode,
    /// `data` → `raw`.
    Encode,
}

/// Config of the `iso8583_codec` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Iso8583CodecConfig {
    /// The dialect: a bundled name (`iso8583-1987-ascii`,
    /// `iso8583-1987-binary`, `iso8583-1993-ascii`), an SDL file (relative to
    /// the scenario), or a name or hash in the spec store.
    #[serde(default = "default_spec")]
    pub spec: String,
    /// `decode` (raw → data) or `encode` (data → raw).
    pub direction: Direction,
}

/// The `iso8583_codec` gear type.
#[derive(Debug)]
pub struct Iso8583Codec;

impl GearKind for Iso8583Codec {
    type Config = Iso8583CodecConfig;
    const NAME: &'static str = "iso8583_codec";
    const ROLE: Role = Role::Transform;
    const SUMMARY: &'static str =
        "Decodes ISO 8583 bytes into data, or encodes data into bytes, with an SDL dialect";
    const DOCS: &'static str = "`decode` reads the message bytes from `raw` (as `iso8583_io` emits them: no \
        length prefix, no header) and sets `data` to the layout documented in `docs/iso8583-data-layout.md` \
        (`.mti`, elements at their alias paths such as `.card.pan`, others at `.de<n>`); `raw` is kept \
        bit-perfect and meta `iso8583.spec` gets the SHA-256 of the dialect. `encode` does the reverse: it \
        writes `data` into `raw` (keys the layout does not know are ignored) and sets `iso8583.spec`. A \
        message that does not decode or encode goes to `error` with a reason naming the element and the \
        byte offset, never a field value.";
    const EXAMPLE: &'static str = "- name: decode\n  type: iso8583_codec\n  config: {spec: iso8583-1987-ascii, direction: decode}";

    fn check(config: &Iso8583CodecConfig, ctx: &CheckContext) -> Vec<ConfigIssue> {
        match load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigIssue::new("spec", e)],
        }
    }

    fn build(config: &Iso8583CodecConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let spec = load_spec(&config.spec, &ctx.base_dir, &ctx.data_dir).map_err(BuildError)?;
        let hash = spec.hash().to_hex();
        Ok(Box::new(CodecGear {
            spec,
            hash,
            direction: config.direction,
            buf: Vec::with_capacity(1024),
        }))
    }
}

struct CodecGear {
    spec: Arc<Spec>,
    hash: String,
    direction: Direction,
    buf: Vec<u8>,
}

impl CodecGear {
    /// Converts one message in place; the reason when it cannot.
    fn convert(&mut self, msg: &mut FluxMsg) -> Result<(), String> {
        match self.direction {
            Direction::Decode => {
                let raw = msg.raw.as_deref().ok_or("no raw bytes to decode")?;
                let m = self.spec.decode(raw).map_err(|e| format!("decode: {e}"))?;
                msg.data = to_value(&m);
            }
            Direction::Encode => {
                self.buf.clear();
                encode_value(&self.spec, &msg.data, &mut self.buf)
                    .map_err(|e| format!("encode: {e}"))?;
                msg.raw = Some(Bytes::copy_from_slice(&self.buf));
            }
        }
        msg.meta.insert(META_SPEC, self.hash.as_str());
        Ok(())
    }
}

impl Gear for CodecGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            let mut batch = Vec::with_capacity(64);
            while let Some(m) = io.recv().await {
                batch.push(m);
                io.try_recv_many(&mut batch, 63);
                for mut msg in batch.drain(..) {
                    match self.convert(&mut msg) {
                        Ok(()) => io.send(msg).await,
                        Err(reason) => io.fail(msg, reason).await,
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use fluxrig_gear::Typed;
    use fluxrig_gear::testkit::TestKit;
    use fluxrig_iso8583::MessageBuilder;
    use fluxrig_msg::{FluxId, Value};

    use super::*;

    fn raw_0100() -> Vec<u8> {
        let spec = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii")
            .unwrap()
            .unwrap();
        let mut b = MessageBuilder::new();
        b.set_mti("0100")
            .set(2, "4111111111111111")
            .set(3, "000000")
            .set(4, "000000012500")
            .set(7, "1127101530")
            .set(11, "004711")
            .set(41, "TERM0001")
            .set(49, "978");
        spec.encode_to_vec(&b).unwrap()
    }

    #[tokio::test]
    async fn decodes_then_encodes_back_bit_perfect() {
        let raw = raw_0100();
        let mut m = FluxMsg::new(FluxId::default(), Value::Null);
        m.raw = Some(Bytes::from(raw.clone()));
        let kind = Typed::<Iso8583Codec>::new();
        let run = TestKit::new(&kind, "direction: decode")
            .inputs(vec![m])
            .run()
            .await
            .unwrap();
        let out = &run.outputs["out"];
        assert_eq!(out.len(), 1);
        let data = &out[0].data;
        assert_eq!(data.get("mti").and_then(Value::as_str), Some("0100"));
        assert_eq!(
            data.get("trace")
                .and_then(|t| t.get("stan"))
                .and_then(Value::as_str),
            Some("004711")
        );
        assert_eq!(out[0].meta.get(META_SPEC).map(str::len), Some(64));

        let mut back = out[0].clone();
        back.raw = None;
        let run = TestKit::new(&kind, "direction: encode")
            .inputs(vec![back])
            .run()
            .await
            .unwrap();
        assert_eq!(run.outputs["out"][0].raw.as_deref(), Some(&raw[..]));
    }

    #[tokio::test]
    async fn errors_name_the_place_never_the_value() {
        let mut raw = raw_0100();
        // Cut the message inside DE 2 (the PAN): its length says 16 digits.
        raw.truncate(4 + 16 + 2 + 5);
        let mut m = FluxMsg::new(FluxId::default(), Value::Null);
        m.raw = Some(Bytes::from(raw));
        let kind = Typed::<Iso8583Codec>::new();
        let run = TestKit::new(&kind, "direction: decode")
            .inputs(vec![m])
            .run()
            .await
            .unwrap();
        let failed = &run.outputs["error"];
        assert_eq!(failed.len(), 1);
        let reason = failed[0].meta.get("error.reason").unwrap();
        assert!(reason.contains("element 2 at byte 22"), "{reason}");
        assert!(!reason.contains("41111"), "{reason}");
    }

    #[test]
    fn an_unknown_spec_is_a_config_issue() {
        let kind = Typed::<Iso8583Codec>::new();
        let node = fluxrig_config::parse("{spec: no-such-dialect, direction: decode}").unwrap();
        let err =
            fluxrig_gear::GearType::prepare(&kind, &node, &CheckContext::default()).unwrap_err();
        assert!(err[0].to_string().contains("spec"), "{err:?}");
    }
}
