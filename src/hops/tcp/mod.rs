//! Kind `tcp`: resolve -> tcp. Is anything listening at `host:port`, reachable from this zone?
//! With `hold=DUR`, then hop `idle`: does the connection survive DUR idle (hops/idle.rs)?

use crate::chain::{Chain, RunContext};
use crate::check_table::{RawCheck, TargetError};
use std::time::Duration;

use crate::hops::connect::{connect_step_keeping, reach, resolve_step, Reach};
use crate::hops::idle;
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::{bracket_v6, url_host, TargetUrl};
use crate::model::{HopKind, HopResult};

#[derive(Debug, Clone, PartialEq)]
pub struct TcpTarget {
    pub host: String,
    pub port: u16,
    /// Also check reverse DNS agreement in the resolve hop.
    pub reverse_dns: bool,
    /// Keep the connection idle this long, then probe it (hop `idle`).
    pub hold: Option<Duration>,
}

impl Kind for TcpTarget {
    const NAME: &'static str = "tcp";
    const KEYS: &'static [&'static str] = &["port", "reverse_dns", "hold"];
    const AGENT_RUNS: bool = true;
    const FAR_SIDE_PROBED: bool = true;
    const RETARGET: Retarget = Retarget::HostPort;

    /// `tcp://HOST:PORT[?hold=DUR]`. An unknown parameter is an error, as for mssql://: a
    /// misspelt `hodl=5s` silently ignored would pass a check that tested nothing.
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        let port = parsed
            .port()
            .ok_or_else(|| url.invalid("no port (tcp://HOST:PORT)"))?;
        if !matches!(parsed.path(), "" | "/") {
            return Err(url.invalid(format!(
                "unexpected path `{}` (tcp://HOST:PORT[?hold=DUR])",
                parsed.path()
            )));
        }
        let mut hold = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "hold" => hold = Some(idle::parse_hold(&value).map_err(|e| url.invalid(e))?),
                other => {
                    return Err(url.invalid(format!("unknown parameter `{other}` (known: hold)")))
                }
            }
        }
        Ok(TcpTarget {
            host,
            port,
            reverse_dns: false,
            hold,
        })
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        let port = raw.port.as_ref().ok_or_else(|| TargetError::At {
            offset: raw.kind.as_ref().map(|k| k.span().start).unwrap_or(0),
            message: "kind `tcp` needs a `port`".into(),
        })?;
        let hold = raw
            .hold
            .as_ref()
            .map(|h| {
                idle::parse_hold(h.get_ref()).map_err(|e| TargetError::At {
                    offset: h.span().start,
                    message: e.to_string(),
                })
            })
            .transpose()?;
        Ok(TcpTarget {
            host,
            port: *port.get_ref(),
            reverse_dns: raw.reverse_dns.unwrap_or(false),
            hold,
        })
    }

    fn display(&self) -> String {
        let base = format!("tcp://{}:{}", bracket_v6(&self.host), self.port);
        match self.hold {
            Some(h) => format!("{base}?hold={}", idle::format_hold(h)),
            None => base,
        }
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn set_host(&mut self, host: String, port: Option<u16>) {
        self.host = host;
        self.port = port.unwrap_or(self.port);
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        let mut planned = vec![HopKind::Resolve, HopKind::Route, HopKind::Tcp];
        if self.hold.is_some() {
            planned.push(HopKind::Idle);
        }
        let mut chain = Chain::new(planned, ctx.hop_timeout);
        let Some(hold) = self.hold else {
            let to = Reach {
                host: &self.host,
                port: self.port,
                reverse_dns: self.reverse_dns,
                resolve_budget: ctx.hop_timeout,
            };
            reach(&mut chain, ctx, &to).await;
            return chain.finish();
        };
        let Some(addrs) = resolve_step(
            &mut chain,
            ctx,
            &self.host,
            self.reverse_dns,
            ctx.hop_timeout,
        )
        .await
        else {
            return chain.finish();
        };
        let Some((peer, stream)) = connect_step_keeping(&mut chain, ctx, &addrs, self.port).await
        else {
            return chain.finish();
        };
        // Bounded: the hold, then one probe window.
        let window = idle::probe_window(ctx.hop_timeout);
        // On the heap: in this future's state it would be copied with every tcp check's future,
        // held or not.
        Box::pin(
            chain.step_with_timeout(HopKind::Idle, hold + window, async {
                crate::chain::HopOutput::ok(idle::tcp_idle(stream, peer, hold, window).await, ())
            }),
        )
        .await;
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
                reverse_dns: false,
                hold: None,
            })
        );
        let held = Target::from_url("tcp://sql01:1433?hold=90s").unwrap();
        assert_eq!(held.display(), "tcp://sql01:1433?hold=90s");
        match held {
            Target::Tcp(t) => assert_eq!(t.hold, Some(Duration::from_secs(90))),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Target::from_url("TCP://[2001:db8::1]:135").unwrap().host(),
            "2001:db8::1"
        );
        for bad in [
            "tcp://sql01",
            "tcp://sql01:99999",
            "tcp://sql01:1433?hold=0s",
            "tcp://sql01:1433?hold=soon",
            "tcp://sql01:1433/x",
        ] {
            assert!(
                matches!(Target::from_url(bad), Err(TargetError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    /// A misspelt parameter is named, never silently ignored (mssql:// already did so).
    #[test]
    fn unknown_parameters_are_refused() {
        let e = Target::from_url("tcp://host:9?hodl=5s").unwrap_err();
        assert!(matches!(e, TargetError::InvalidUrl { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("unknown parameter `hodl`"), "{shown}");
        assert!(shown.contains("known: hold"), "{shown}");
    }

    #[test]
    fn hold_in_a_config_table() {
        let cfg = crate::config::parse(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\nhold = \"15s\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        match &cfg.checks[0].target {
            Target::Tcp(t) => assert_eq!(t.hold, Some(Duration::from_secs(15))),
            other => panic!("{other:?}"),
        }
        let e = crate::config::parse(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\nhold = \"15 parsecs\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (6, 8), "{e}");
        assert!(e.message.contains("hold"), "{e}");
    }
}
