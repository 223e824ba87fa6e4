//! Hop `sqlbrowser`: asks the SQL Server Browser (UDP 1434, [`super::ssrp`]) for a named
//! instance's TCP port.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use super::ssrp;
use crate::chain::HopOutput;
use crate::model::{Cause, HopKind, HopResult, Status};

pub(super) async fn sqlbrowser(
    addrs: &[IpAddr],
    instance: &str,
    limit: Duration,
) -> HopOutput<u16> {
    let Some(ip) = addrs.first() else {
        return HopOutput::stop(HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Internal,
            "no address to ask",
        ));
    };
    let to = SocketAddr::new(*ip, ssrp::BROWSER_PORT);
    let base = |r: HopResult| {
        r.with_data("address", to.to_string())
            .with_data("instance", instance)
    };
    match ssrp::query(to, instance, limit).await {
        ssrp::QueryOutcome::Answer(d) => {
            let r = base(browser_answer(&d, instance));
            match (r.status, r.data.get("tcp_port").and_then(Value::as_u64)) {
                (Status::Pass, Some(p)) => HopOutput::ok(r, p as u16),
                _ => HopOutput::stop(r),
            }
        }
        ssrp::QueryOutcome::Refused => HopOutput::stop(base(
            HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::Refused,
                format!("{to}: UDP port unreachable"),
            )
            .with_hint(
                "nothing listens on UDP 1434 there: the SQL Server Browser service is stopped. \
                     Start it, or put the instance's static TCP port in the target \
                     (mssql://user@host:PORT/db)",
            ),
        )),
        ssrp::QueryOutcome::NoAnswer => HopOutput::stop(base(
            HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::Timeout,
                format!(
                    "{to}: no answer to 3 requests within {}",
                    humantime::format_duration(limit)
                ),
            )
            .with_hint(
                "UDP 1434 is blocked between the zones (firewalls often open only TCP), the SQL \
                 Server Browser is not running, or the instance name is wrong (the Browser stays \
                 silent for unknown instances). Opening UDP 1434, or using the instance's static \
                 port in the target, avoids the lookup",
            ),
        )),
        ssrp::QueryOutcome::Error(e) => {
            let cause = match e.kind() {
                std::io::ErrorKind::PermissionDenied => Cause::Prohibited,
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    Cause::Unreachable
                }
                _ => Cause::Internal,
            };
            HopOutput::stop(base(HopResult::fail(
                HopKind::Sqlbrowser,
                cause,
                format!("{to}: {e}"),
            )))
        }
    }
}

/// Pure: the hop result for a Browser answer.
pub fn browser_answer(datagram: &[u8], instance: &str) -> HopResult {
    let list = match ssrp::parse_response(datagram) {
        Ok(l) => l,
        Err(e) => {
            return HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::ProtocolError,
                format!("bad SQL Browser answer: {e}"),
            )
            .with_hint("something other than the SQL Server Browser answers on UDP 1434")
        }
    };
    let names: Vec<&str> = list.iter().map(|i| i.instance_name.as_str()).collect();
    let Some(info) = ssrp::find_instance(&list, instance) else {
        return HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Config,
            format!(
                "instance `{instance}` is not among the instances the Browser lists: {}",
                names.join(", ")
            ),
        )
        .with_hint("check the instance name in the target")
        .with_data("instances", names);
    };
    let r = match info.tcp_port {
        Some(p) => HopResult::pass(
            HopKind::Sqlbrowser,
            format!("instance {} of {} listens on TCP {p}", info.instance_name, info.server_name),
        )
        .with_data("tcp_port", p),
        None => HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Refused,
            format!("instance {} does not listen on TCP (the Browser lists no tcp port)", info.instance_name),
        )
        .with_hint(
            "the TCP/IP protocol is disabled for this instance: enable it in SQL Server Configuration \
             Manager > Network Configuration > Protocols, and restart the instance",
        ),
    };
    r.with_data("server_name", info.server_name.clone())
        .with_data("version", info.version.clone())
        .with_data("clustered", info.is_clustered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_answers() {
        let ok = ssrp::encode_response(&[ssrp::InstanceInfo {
            server_name: "S".into(),
            instance_name: "INST".into(),
            version: "16.0.1000.6".into(),
            tcp_port: Some(50123),
            ..Default::default()
        }]);
        let r = browser_answer(&ok, "inst");
        assert_eq!(
            (r.status, r.data["tcp_port"].as_u64()),
            (Status::Pass, Some(50123))
        );
        assert_eq!(browser_answer(&ok, "OTHER").cause, Some(Cause::Config));
        let no_tcp = ssrp::encode_response(&[ssrp::InstanceInfo {
            instance_name: "INST".into(),
            ..Default::default()
        }]);
        assert_eq!(browser_answer(&no_tcp, "INST").cause, Some(Cause::Refused));
        assert_eq!(
            browser_answer(b"junk", "INST").cause,
            Some(Cause::ProtocolError)
        );
    }
}
