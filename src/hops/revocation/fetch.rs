//! One revocation URL fetched from this zone: resolve, connect (classified as the tcp hop
//! does), then for `http://` the GET or the OCSP POST and the answer, all within the hop
//! timeout. The bytes are crates/wire's ([`dtcprobe_wire::http`], [`dtcprobe_wire::ocsp`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dtcprobe_wire::http::{encode_request, is_complete, parse_response};
use dtcprobe_wire::ocsp::{response_status, ResponseStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::outcome::{outcome, Outcome};
use crate::chain::RunContext;
use crate::hops::certificate::{RevocationUrl, UrlKind};
use crate::hops::connect;
use crate::model::{Cause, Status};
use crate::resolver::DnsError;

/// A CRL of a large CA runs to megabytes; reading that much proves nothing more.
const MAX_ANSWER: usize = 8 << 20;

pub(super) async fn one(url: RevocationUrl, ctx: &RunContext, limit: Duration) -> Outcome {
    let started = Instant::now();
    let mut o = outcome(url);
    match tokio::time::timeout(limit, fetch(&mut o, ctx, limit)).await {
        Ok(()) => {}
        Err(_) => {
            // Connected (or the connect would have been judged): the answer did not come.
            o.status = Status::Fail;
            o.cause = Some(Cause::Timeout);
            o.detail = format!("no complete answer within {} ms", limit.as_millis());
        }
    }
    o.elapsed = started.elapsed();
    o
}

async fn fetch(o: &mut Outcome, ctx: &RunContext, limit: Duration) {
    let started = Instant::now();
    let parsed = match url::Url::parse(&o.url.url) {
        Ok(u) => u,
        Err(e) => {
            o.detail = format!("not a URL ({e})");
            return;
        }
    };
    let scheme = parsed.scheme().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "ldap" => 389,
        other => {
            o.detail = format!("a {other}: URL is not fetched");
            return;
        }
    };
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        o.detail = "no host in the URL: the client asks its own domain controllers (AD CS's \
                    ldap:/// form; hop kdc checks LDAP to them)"
            .into();
        return;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port().unwrap_or(default_port);
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match ctx.resolver.forward(&host, limit).await {
            Ok(ips) if !ips.is_empty() => ips[0],
            Ok(_) => {
                fail(o, Cause::DnsNxdomain, format!("{host} has no address"));
                return;
            }
            Err(e) => {
                let cause = match e {
                    DnsError::NxDomain | DnsError::NoRecords(_) => Cause::DnsNxdomain,
                    DnsError::Timeout(_) => Cause::DnsTimeout,
                    _ => Cause::DnsError,
                };
                fail(o, cause, format!("{host} does not resolve: {e}"));
                return;
            }
        },
    };
    let addr = SocketAddr::new(ip, port);
    o.address = Some(addr);
    let remaining = limit.saturating_sub(started.elapsed());
    let (attempt, stream) = connect::connect(addr, remaining).await;
    o.source = attempt.source;
    let Some(mut stream) = stream else {
        match attempt.verdict() {
            Some(v) => fail(o, v.cause, format!("TCP {addr}: {}", v.detail)),
            None => fail(o, Cause::Internal, format!("TCP {addr} failed")),
        }
        return;
    };
    if scheme != "http" {
        o.status = Status::Pass;
        o.detail = format!("TCP {addr} connected ({scheme}: not fetched)");
        return;
    }
    let host_header = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or(&host)),
        None => parsed.host_str().unwrap_or(&host).to_string(),
    };
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let request = match (o.url.kind, &o.url.ocsp_request) {
        (UrlKind::Ocsp, Some(body)) => encode_request(
            &host_header,
            &path,
            Some(("application/ocsp-request", body)),
        ),
        (UrlKind::Ocsp, None) => {
            o.status = Status::Pass;
            o.detail = format!(
                "TCP {addr} connected (no OCSP request sent: the issuer's key is not known)"
            );
            return;
        }
        _ => encode_request(&host_header, &path, None),
    };
    if let Err(e) = stream.write_all(&request).await {
        fail(
            o,
            Cause::Reset,
            format!("the request to {addr} failed: {e}"),
        );
        return;
    }
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded by MAX_ANSWER and the caller's timeout.
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(k) => {
                answer.extend_from_slice(&buf[..k]);
                if answer.len() > MAX_ANSWER || is_complete(&answer) {
                    break;
                }
            }
            Err(e) if answer.is_empty() => {
                fail(
                    o,
                    Cause::Reset,
                    format!("{addr} closed the connection: {e}"),
                );
                return;
            }
            Err(_) => break,
        }
    }
    let response = match parse_response(&answer) {
        Ok(r) => r,
        Err(e) if answer.is_empty() => {
            fail(
                o,
                Cause::Reset,
                format!("{addr} closed the connection without an answer ({e})"),
            );
            return;
        }
        Err(e) => {
            warn(o, format!("{addr} answered, but not HTTP ({e})"));
            return;
        }
    };
    o.http_status = Some(response.status);
    o.bytes = Some(response.body.len());
    if response.status != 200 {
        warn(o, format!("HTTP {}", response.status));
        return;
    }
    if o.url.kind == UrlKind::Ocsp {
        match response_status(&response.body) {
            Some(ResponseStatus::Successful) => {
                o.ocsp_status = Some(ResponseStatus::Successful.as_str());
                o.status = Status::Pass;
                o.detail = format!("OCSP answered successful, {} bytes", response.body.len());
            }
            Some(other) => {
                o.ocsp_status = Some(other.as_str());
                warn(o, format!("OCSP answered {}", other.as_str()));
            }
            None => warn(o, "HTTP 200, but not an OCSP response".into()),
        }
        return;
    }
    o.status = Status::Pass;
    o.detail = format!("HTTP 200, {} bytes", response.body.len());
}

fn fail(o: &mut Outcome, cause: Cause, detail: String) {
    o.status = Status::Fail;
    o.cause = Some(cause);
    o.detail = detail;
}

fn warn(o: &mut Outcome, detail: String) {
    o.status = Status::Warn;
    o.cause = Some(Cause::ProtocolError);
    o.detail = detail;
}
