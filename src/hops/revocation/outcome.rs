//! One revocation URL's outcome (hop `revocation`), shared by the fetch and the verdict.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::hops::certificate::RevocationUrl;
use crate::model::{Cause, Status};

/// One URL's outcome.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    pub url: RevocationUrl,
    pub status: Status,
    pub cause: Option<Cause>,
    pub detail: String,
    pub address: Option<SocketAddr>,
    pub source: Option<IpAddr>,
    pub http_status: Option<u16>,
    pub ocsp_status: Option<&'static str>,
    pub bytes: Option<usize>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        json!({
            "url": self.url.url,
            "kind": self.url.kind.as_str(),
            "status": self.status.as_str(),
            "cause": self.cause.map(Cause::as_str),
            "detail": self.detail,
            "address": self.address.map(|a| a.to_string()),
            "http_status": self.http_status,
            "ocsp_status": self.ocsp_status,
            "bytes": self.bytes,
            "duration_seconds": (self.elapsed.as_secs_f64() * 1e6).round() / 1e6,
        })
    }
}

/// A URL not fetched yet (a `skip` until the fetch says otherwise).
pub(super) fn outcome(url: RevocationUrl) -> Outcome {
    Outcome {
        url,
        status: Status::Skip,
        cause: None,
        detail: String::new(),
        address: None,
        source: None,
        http_status: None,
        ocsp_status: None,
        bytes: None,
        elapsed: Duration::ZERO,
    }
}
