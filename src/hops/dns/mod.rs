//! Kind `dns`: resolve only, forward and reverse for every address. MSDTC calls its partner back
//! by name, so a name whose PTR does not map back is worth knowing before anything else.

use crate::chain::{Chain, RunContext};
use crate::check_table::{RawCheck, TargetError};
use crate::hops::connect::resolve_step;
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::{bracket_v6, url_host, TargetUrl};
use crate::model::{HopKind, HopResult};

#[derive(Debug, Clone, PartialEq)]
pub struct DnsTarget {
    pub host: String,
}

impl Kind for DnsTarget {
    const NAME: &'static str = "dns";
    const KEYS: &'static [&'static str] = &[];
    const AGENT_RUNS: bool = true;
    const RETARGET: Retarget = Retarget::Host;

    /// `dns://HOST`. Anything more is an error, as for every scheme: a parameter or port that
    /// was silently ignored would pass a check that tested something else.
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        if let Some((key, _)) = parsed.query_pairs().next() {
            return Err(url.invalid(format!("unknown parameter `{key}` (dns://HOST takes none)")));
        }
        if parsed.port().is_some() || !matches!(parsed.path(), "" | "/") {
            return Err(url.invalid("dns://HOST takes no port or path"));
        }
        Ok(DnsTarget { host })
    }

    fn from_config(_raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        Ok(DnsTarget { host })
    }

    fn display(&self) -> String {
        format!("dns://{}", bracket_v6(&self.host))
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn set_host(&mut self, host: String, _port: Option<u16>) {
        self.host = host;
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        let mut chain = Chain::new(vec![HopKind::Resolve], ctx.hop_timeout);
        // Forward and reverse lookups of every address: give the hop a budget for several.
        resolve_step(&mut chain, ctx, &self.host, true, ctx.hop_timeout * 4).await;
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
            Target::from_url("dns://web01.corp").unwrap(),
            Target::Dns(DnsTarget {
                host: "web01.corp".into()
            })
        );
    }
}
