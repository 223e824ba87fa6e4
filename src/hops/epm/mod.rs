//! Hops `epm`, `rpc_port` and `rpc_bind`: ask the RPC endpoint mapper (TCP 135) where an interface
//! (by default MSDTC's IXnRemote) listens, open TCP to each port it returned, then bind to the
//! interface there. The classic zone failure is "135 passes the firewall, the dynamic RPC port
//! does not": `epm` pass, `rpc_port` fail/timeout. Its quieter sibling is "the port passes, the
//! RPC inside it does not" (an RPC-aware firewall): `rpc_port` pass, `rpc_bind` fail.
//!
//! One file per concern:
//! - `target`: the check's target type and its parsing (URL, config keys), no I/O;
//! - `client`: the endpoint-mapper conversation over TCP and its errors;
//! - `assess`: pure verdicts and hints ([`assess`], [`rpc_port_result`], [`mark_duplicate_cids`],
//!   [`EpmError::classify`]) with table tests;
//! - `run`: the hop chain and its time budget.
//!
//! The codec is [`crate::dcerpc`]; the text rendering of `--list-endpoints` is
//! [`crate::report::endpoints`]. Everything public is re-exported here, so callers name
//! `crate::hops::epm::NAME` and do not depend on this layout.

mod assess;
mod client;
#[cfg(test)]
pub(crate) mod fixtures;
mod run;
mod target;

pub use assess::{
    assess, mark_duplicate_cids, rpc_bind_result, rpc_port_result, BindAttempt, EpmFound,
    HINT_ACCESS_DENIED, HINT_BIND_NOT_RPC, HINT_BIND_OTHER_SERVER, HINT_DTC_NOT_REGISTERED,
    HINT_DUPLICATE_CID, HINT_LOCAL_ONLY, HINT_NETWORK_DTC_OFF, HINT_NOT_REGISTERED, HINT_PROTOCOL,
    HINT_RPC_FILTERED, HINT_RPC_PORT, HINT_TOWER_ADDRESS,
};
pub use client::{probe_bind, BindOutcome, EpmClient, EpmError};
pub use run::{entry_json, epm, rpc_bind, rpc_port, run, EpmOptions, MAX_BIND_PORTS};
pub use target::{parse_interface, EpmTarget, EpmUrlError, Interface, EPM_PORT};

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::TargetUrl;
use crate::model::HopResult;

impl Kind for EpmTarget {
    const NAME: &'static str = "epm";
    const KEYS: &'static [&'static str] = EpmTarget::KEYS;
    const SERVICE: Option<&'static str> = Some("RPC endpoint mapper");
    const DEFAULT_PORT: Option<u16> = Some(EPM_PORT);
    const AGENT_RUNS: bool = true;
    const FAR_SIDE_PROBED: bool = true;
    const RETARGET: Retarget = Retarget::HostPort;

    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = crate::hostport::url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        EpmTarget::from_parsed_url(&parsed, host).map_err(|m| url.invalid(m))
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        EpmTarget::from_table(raw, host)
    }

    fn display(&self) -> String {
        self.canonical()
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
        run(self, ctx).await
    }
}
