//! What a check is: a name, the zones it crosses, and its target. The target types and their
//! parsing belong to the kinds (`hops/<kind>/`, gathered by the registry in [`crate::hops`]);
//! this module re-exports the two names callers use beside [`CheckSpec`].

use std::time::Duration;

pub use crate::check_table::TargetError;
pub use crate::hops::Target;

/// One check to run: a name, the zones it crosses, and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Per-hop timeout for this check; `None` uses the run's `--timeout`.
    pub timeout: Option<Duration>,
    pub target: Target,
}

impl CheckSpec {
    /// Whether the check is declared to go from one zone to another (both named, different).
    pub fn crosses_zones(&self) -> bool {
        matches!((&self.from, &self.to), (Some(f), Some(t)) if f != t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_is_its_own_error() {
        assert!(matches!(
            Target::from_url("ftp://x:21"),
            Err(TargetError::UnknownScheme { .. })
        ));
        assert!(matches!(
            Target::from_url("sql01:1433"),
            Err(TargetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::from_url("tcp://sql01"),
            Err(TargetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::from_url("tcp://sql01:99999"),
            Err(TargetError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for u in [
            "tcp://sql01:1433",
            "dns://web01",
            "tcp://[::1]:135",
            "epm://h:135",
            "postgres://app@db01:5432/orders?tx=twophase",
            "mssql://sa@sql01/app?tx=local",
        ] {
            assert_eq!(Target::from_url(u).unwrap().display(), u);
        }
    }
}
