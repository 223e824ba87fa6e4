//! Hop `dtc_cid`: two hosts' MSDTC CIDs compared (check `msdtc_cid` of a `peer` run, from
//! `--cid` or the CIDs both sides' `dtc_config` hops read). Equal CIDs mean cloned machines
//! (an image without sysprep): MSDTC then takes the two hosts for one. Its own hop kind: it runs
//! no transaction, so reporting it as `tx_distributed` (as earlier builds did) told a script the
//! wrong thing.

use serde_json::json;

use crate::model::{Cause, HopKind, HopResult};

/// Pure: compares two MSDTC CIDs (GUIDs; braces and case ignored).
pub fn compare_cids(local: &str, remote: &str) -> HopResult {
    let norm = |s: &str| {
        s.trim()
            .trim_matches(|c| c == '{' || c == '}')
            .to_ascii_lowercase()
    };
    let data = json!({ "local": local, "remote": remote });
    if norm(local) == norm(remote) {
        HopResult::fail(
            HopKind::DtcCid,
            Cause::DuplicateCid,
            format!("both hosts have MSDTC CID {}", norm(local)),
        )
        .with_hint(
            "identical MSDTC CIDs (cloned VM or image without sysprep) make MSDTC treat the two \
             hosts as one and distributed transactions between them fail: on one host run \
             `msdtc -uninstall` then `msdtc -install` (Windows) and re-apply the DTC security \
             settings",
        )
        .with_data("cid", data)
    } else {
        HopResult::pass(HopKind::DtcCid, "MSDTC CIDs differ").with_data("cid", data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[test]
    fn cid_comparison_table() {
        let cases = [
            ("{5D1E...A}", "{5d1e...a}", Status::Fail),
            ("5d1eaaaa-0000", "{5D1EAAAA-0000}", Status::Fail),
            ("aaaa", "bbbb", Status::Pass),
        ];
        for (l, r, want) in cases {
            let hop = compare_cids(l, r);
            assert_eq!((hop.hop, hop.status), (HopKind::DtcCid, want), "{l} vs {r}");
            if want == Status::Fail {
                assert_eq!(hop.cause, Some(Cause::DuplicateCid));
            }
            assert_eq!(hop.data["cid"]["local"], l);
        }
    }
}
