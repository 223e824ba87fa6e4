//! The text listing of `--list-endpoints` for the human exporter: the `entries` an `epm` hop put
//! in its data, grouped like PortQry -e 135 / rpcdump. A renderer, so it lives with the other
//! renderers and reads only the report model; the hop that fills `entries` is `hops::epm`.

use std::io::{self, Write};

use serde_json::Value;

use crate::dcerpc::Uuid;
use crate::model::{CheckResult, HopKind};

/// Text listing of the `entries` an `epm` hop collected (`--list-endpoints`), grouped like
/// PortQry -e 135 / rpcdump: one `UUID: ... vX.Y  annotation` line, then its bindings. Writes
/// nothing for a check without entries. For the human / plain exporters, after the hop table.
pub fn write_endpoint_listing(check: &CheckResult, out: &mut dyn Write) -> io::Result<()> {
    for hop in check.hops.iter().filter(|h| h.hop == HopKind::Epm) {
        let Some(entries) = hop.data.get("entries").and_then(Value::as_array) else {
            continue;
        };
        let mapper = hop
            .data
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or("?");
        writeln!(
            out,
            "\nEndpoint mapper {mapper} ({}): {} entries",
            check.name,
            entries.len()
        )?;
        // Group in first-seen order.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for e in entries {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut key = format!("UUID: {} v{}", text("uuid"), text("version"));
            if !text("annotation").is_empty() {
                key.push_str("  ");
                key.push_str(&text("annotation"));
            }
            let object = text("object");
            let binding = if object.is_empty() || object == Uuid::NIL.to_string() {
                text("binding")
            } else {
                format!("{}  (object {object})", text("binding"))
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, b)) => b.push(binding),
                None => groups.push((key, vec![binding])),
            }
        }
        for (key, bindings) in groups {
            writeln!(out, "{key}")?;
            for b in bindings {
                writeln!(out, "    {b}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dcerpc::epm::{Entry, Tower};
    use crate::dcerpc::IXNREMOTE;
    use crate::hops::epm::entry_json;
    use crate::hops::epm::fixtures::{epm_check as check, lrpc};
    use crate::model::HopResult;

    #[test]
    fn endpoint_listing_text() {
        let cid = Uuid::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let entries = [
            Entry {
                object: Uuid::NIL,
                tower: Some(Ok(Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 0, 0, 1), 5000))),
                annotation: "MSDTC".into(),
            },
            Entry {
                object: cid,
                tower: Some(Ok(lrpc(&IXNREMOTE))),
                annotation: "MSDTC".into(),
            },
        ];
        let list: Vec<Value> = entries.iter().map(entry_json).collect();
        let mut c = check("epm://sql01", None, "10.0.0.1:135");
        c.hops[0] = HopResult::pass(HopKind::Epm, "ok")
            .with_data("address", "10.0.0.1:135")
            .with_data("entries", list);
        let mut out = Vec::new();
        write_endpoint_listing(&c, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\nEndpoint mapper 10.0.0.1:135 (epm://sql01): 2 entries\n\
             UUID: 906b0ce0-c70b-1067-b317-00dd010662da v1.0  MSDTC\n    ncacn_ip_tcp:10.0.0.1[5000]\n    \
             ncalrpc:[OLE1]  (object 11111111-2222-3333-4444-555555555555)\n"
        );
        let mut out = Vec::new();
        write_endpoint_listing(&check("epm://x", None, "10.0.0.2:135"), &mut out).unwrap();
        assert!(out.is_empty());
    }
}
