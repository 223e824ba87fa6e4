//! Hints for results the agent produced on the far side.
//!
//! A reverse hop (the agent's lookup of the caller's name, a reverse check) is built by the same
//! code as a forward one, so its hint speaks of "this host": read on the near side, that points
//! the sysadmin at the wrong machine ("as this host's DNS sees it" about the agent's DNS). The
//! near side rewords every hint it receives from the agent before reporting it. Done on the near
//! side, so an older agent's results are reworded too. Pure text in, text out.

use crate::model::{CheckResult, HopResult};

/// Phrases that mean "the machine that ran the hop", most specific first, and what they become
/// when the agent ran it.
const REWORDINGS: &[(&str, &str)] = &[
    ("this host's own firewall", "the agent host's own firewall"),
    ("this host's DNS", "the agent host's DNS"),
    ("this host's", "the agent host's"),
    ("served to this host", "served to the agent's host"),
    ("configured on this host", "configured on the agent's host"),
    ("from this zone", "from the agent's zone"),
    ("this host", "the agent's host"),
    ("this machine", "the agent's machine"),
];

/// The hint reworded for a hop the agent ran: "this host" becomes the agent's host, and the
/// hint says where to look.
pub fn reword_hint(hint: &str) -> String {
    let mut text = hint.to_string();
    // One pass per phrase would reword a replacement again ("the agent host's" contains no
    // "this host", so the order above is enough); kept simple and tested below.
    for (from, to) in REWORDINGS {
        text = text.replace(from, to);
    }
    format!("on the agent's side: {text}")
}

/// A hop the agent ran, with its hint reworded (once: a hint already reworded is kept).
pub fn reword_hop(mut hop: HopResult) -> HopResult {
    if let Some(h) = hop.hint.take() {
        hop.hint = Some(if h.starts_with("on the agent's side: ") {
            h
        } else {
            reword_hint(&h).into()
        });
    }
    hop
}

/// Every hop of a check the agent ran.
pub fn reword_check(mut check: CheckResult) -> CheckResult {
    check.hops = check.hops.into_iter().map(reword_hop).collect();
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hops::resolve::{HINT_DNS_TIMEOUT, HINT_NXDOMAIN};
    use crate::model::{Cause, HopKind};

    #[test]
    fn forward_wording_becomes_the_far_side() {
        for hint in [
            HINT_NXDOMAIN,
            HINT_DNS_TIMEOUT,
            crate::classify::HINT_NO_LOCAL_ADDRESS,
        ] {
            let far = reword_hint(hint);
            assert!(!far.contains("this host"), "{far}");
            assert!(far.starts_with("on the agent's side: "), "{far}");
            assert!(far.contains("agent"), "{far}");
        }
        assert!(reword_hint(HINT_NXDOMAIN).contains("as the agent host's DNS sees it"));
    }

    #[test]
    fn a_hop_is_reworded_once() {
        let hop =
            HopResult::fail(HopKind::Resolve, Cause::DnsNxdomain, "x").with_hint(HINT_NXDOMAIN);
        let once = reword_hop(hop);
        let twice = reword_hop(once.clone());
        assert_eq!(once.hint, twice.hint);
    }
}
