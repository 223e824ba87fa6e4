//! One check of the agent relationship, built from its hops (the near side's own checks:
//! `agent`, `callback`, `msdtc_cid`, `msdtc_pair`).

use crate::model::{CheckResult, Direction, HopResult};

pub(super) fn check(
    name: &str,
    kind: &str,
    target: String,
    from: Option<String>,
    to: Option<String>,
    direction: Direction,
    hops: Vec<HopResult>,
) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        kind: kind.to_string(),
        target,
        from,
        to,
        direction,
        status: CheckResult::status_of(&hops),
        hops,
    }
}
