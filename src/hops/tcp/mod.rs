//! Kind `tcp`: resolve -> tcp. Is anything listening at `host:port`, reachable from this zone?

use crate::chain::{Chain, RunContext};
use crate::check_table::{RawCheck, TargetError};
use crate::hops::connect::{reach, Reach};
use crate::hops::kind::Kind;
use crate::hostport::{bracket_v6, url_host, TargetUrl};
use crate::model::{HopKind, HopResult};

#[derive(Debug, Clone, PartialEq)]
pub struct TcpTarget {
    pub host: String,
    pub port: u16,
    /// Also check reverse DNS agreement in the resolve hop.
    pub reverse_dns: bool,
}

impl Kind for TcpTarget {
    const NAME: &'static str = "tcp";
    const KEYS: &'static [&'static str] = &["port", "reverse_dns"];

    /// `tcp://HOST:PORT`.
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        let port = parsed
            .port()
            .ok_or_else(|| url.invalid("no port (tcp://HOST:PORT)"))?;
        Ok(TcpTarget {
            host,
            port,
            reverse_dns: false,
        })
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        let port = raw.port.as_ref().ok_or_else(|| TargetError::At {
            offset: raw.kind.as_ref().map(|k| k.span().start).unwrap_or(0),
            message: "kind `tcp` needs a `port`".into(),
        })?;
        Ok(TcpTarget {
            host,
            port: *port.get_ref(),
            reverse_dns: raw.reverse_dns.unwrap_or(false),
        })
    }

    fn display(&self) -> String {
        format!("tcp://{}:{}", bracket_v6(&self.host), self.port)
    }

    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        let mut chain = Chain::new(
            vec![HopKind::Resolve, HopKind::Route, HopKind::Tcp],
            ctx.hop_timeout,
        );
        let to = Reach {
            host: &self.host,
            port: self.port,
            reverse_dns: self.reverse_dns,
            resolve_budget: ctx.hop_timeout,
        };
        reach(&mut chain, ctx, &to).await;
        chain.finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::hops::Target;

    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Target::from_url("tcp://sql01:1433").unwrap(),
            Target::Tcp(TcpTarget {
                host: "sql01".into(),
                port: 1433,
                reverse_dns: false
            })
        );
        assert_eq!(
            Target::from_url("TCP://[2001:db8::1]:135").unwrap().host(),
            "2001:db8::1"
        );
        for bad in ["tcp://sql01", "tcp://sql01:99999"] {
            assert!(
                matches!(Target::from_url(bad), Err(TargetError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
