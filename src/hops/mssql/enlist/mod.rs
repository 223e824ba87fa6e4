//! Hop `tx_enlist` (`tx=enlist`): THIS host's MSDTC begins a transaction, SQL Server enlists in
//! it, the usual #temp work runs inside it, this host aborts it, and SQL Server must report the
//! transaction over with nothing persisted. DTCTester parity (KB 293799), and the path the
//! outage this tool exists for broke: the client zone's MSDTC getting its transactions into the
//! SQL zone's MSDTC. `tx_distributed` (BEGIN DISTRIBUTED TRANSACTION on the server) never
//! involves this host's MSDTC.
//!
//! Route: TDS transaction manager requests written by dtcprobe ([`session`]): TM_GET_DTC_ADDRESS
//! for the SQL host's MSDTC whereabouts, this host's MSDTC exports the transaction to them
//! ([`dtc::LocalTransaction::export`]), TM_PROPAGATE_XACT hands SQL Server the cookie, and every
//! later batch carries the enlisted descriptor in ALL_HEADERS. tiberius cannot send 0x0E
//! packets; the ODBC route (SQL_COPT_SS_ENLIST_IN_DTC) could only ever run on Windows, while this
//! one's TDS half is tested end to end against the test peer (docs/mssql.md).
//!
//! The local MSDTC is a trait ([`dtc::LocalDtc`]): COM on Windows ([`windows`], confirmed only on
//! a real Windows host), a scripted one in the tests. Other platforms `skip` the hop.

pub mod classify;
pub mod dtc;
pub mod dtc_name;
pub mod session;
#[cfg(windows)]
pub mod windows;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtcprobe_wire::tds::reply::{Token, Value};
use dtcprobe_wire::tds::tm::{
    descriptor_from_bytes, TmRequest, ENV_DEFECT_TRAN, ENV_ROLLBACK_TRAN, ENV_TRANSACTION_ENDED,
};
use serde_json::{json, Map, Value as Json};
use tokio::time::Instant;

use self::classify::{local_failure, server_refusal, LocalPhase};
use self::dtc::{DtcError, LocalDtc, LocalTransaction};
use self::session::{dtc_address, first_binary, first_error, Session};
use super::classify::{classify_failure, Failure};
use super::spec::{Encrypt, MssqlTarget};
use super::transactions::tx_statements;
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::Secret;

const KIND: HopKind = HopKind::TxEnlist;

/// Why the hop cannot run here, if it cannot: the reason a `skip` gives.
pub const NEEDS_WINDOWS: &str = "needs the Windows build: this host's MSDTC";

/// Where a `tx_enlist` that cannot run here can run.
pub const HINT_RUN_ON_WINDOWS: &str = "run this check with the Windows build (dtcprobe.exe) on a \
Windows host of this zone, where the applications' MSDTC is; tx=distributed proves only the SQL \
host's MSDTC";

/// This host's MSDTC, or why there is none to use.
pub fn this_host_dtc() -> Result<Arc<dyn LocalDtc>, &'static str> {
    #[cfg(windows)]
    {
        Ok(Arc::new(windows::WindowsDtc))
    }
    #[cfg(not(windows))]
    {
        Err(NEEDS_WINDOWS)
    }
}

/// SQL Server's answer after the abort that proves the enlisted transaction is over.
const ENDED_ERRORS: [i32; 2] = [
    // "Distributed transaction completed. Either enlist this session in a new transaction or
    // the NULL transaction."
    8525, // "The server failed to resume the transaction."
    3971,
];

/// Phase timings, for `data.phase_seconds`.
struct Phases {
    started: Instant,
    last: Instant,
    map: Map<String, Json>,
}

impl Phases {
    fn new() -> Phases {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
            map: Map::new(),
        }
    }
    fn done(&mut self, name: &str) {
        let now = Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.map
            .insert(name.into(), json!((secs * 1e6).round() / 1e6));
        self.last = now;
    }
}

/// What the run learned, for the hop data; filled as it goes so a failure reports it too.
#[derive(Default)]
struct Facts {
    local_tx_id: Option<String>,
    dtc_address: Option<Vec<u8>>,
    cookie_len: Option<usize>,
    server_descriptor: Option<u64>,
    encryption: Option<&'static str>,
    ended_by: Option<String>,
    unenlist_error: Option<u32>,
    statements: usize,
}

/// A failure, with the step it happened at.
struct Stop {
    step: &'static str,
    result: HopResult,
}

fn stop(step: &'static str, result: HopResult) -> Stop {
    Stop { step, result }
}

fn tds_stop(step: &'static str, f: &Failure) -> Stop {
    let mut r = classify_failure(f).into_hop(KIND);
    if let Failure::Server {
        number,
        state,
        class,
        ..
    } = f
    {
        r = r.with_data(
            "error",
            json!({"number": number, "state": state, "class": class}),
        );
    }
    stop(step, r)
}

/// A failed login, with what the `login` hop adds under strict: trust_server_certificate was
/// ignored on purpose.
fn login_stop(t: &MssqlTarget, f: &Failure) -> Stop {
    let mut s = tds_stop("login", f);
    let r = &mut s.result;
    // Only where the certificate can be the trouble (not a server without TDS 8).
    if t.encrypt == Encrypt::Strict && t.trust_server_certificate && matches!(f, Failure::Tls(_)) {
        r.hint = Some(
            format!(
                "{} {}",
                super::tls::STRICT_IGNORES_TRUST,
                r.hint.take().unwrap_or_default()
            )
            .into(),
        );
    }
    s
}

fn server_stop(step: &'static str, wire_step: &str, f: Failure) -> Stop {
    match &f {
        Failure::Server {
            number,
            state,
            class,
            message,
        } => {
            let mut v = server_refusal(wire_step, *number, *state);
            v.detail = format!("error {number}, state {state}, class {class}: {message}");
            stop(
                step,
                v.into_hop(KIND).with_data(
                    "error",
                    json!({"number": number, "state": state, "class": class}),
                ),
            )
        }
        _ => tds_stop(step, &f),
    }
}

fn local_stop(step: &'static str, phase: LocalPhase, e: &DtcError) -> Stop {
    stop(
        step,
        local_failure(phase, e)
            .into_hop(KIND)
            .with_data("hresult", format!("0x{:08X}", e.hresult)),
    )
}

/// Runs a blocking MSDTC call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Failure::Protocol("the MSDTC call panicked".into()))
}

/// The hop, with the local MSDTC given (the chain passes [`this_host_dtc`], the tests a
/// scripted one). Bounded by `limit`; never returns an error, only a hop result.
pub async fn run_enlist(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    dtc: Arc<dyn LocalDtc>,
    marker: &str,
    limit: Duration,
) -> HopResult {
    if let Some(r) = session::integrated_unsupported(t, KIND) {
        return r;
    }
    let mut state = FlowState {
        facts: Facts::default(),
        phases: Phases::new(),
        local: None,
    };
    let connect_limit = limit / 4;
    let outcome = tokio::time::timeout(
        limit,
        enlist_flow(t, addr, password, dtc, marker, connect_limit, &mut state),
    )
    .await;
    let FlowState {
        facts,
        phases,
        mut local,
    } = state;
    // Whatever happened, this host's transaction must not outlive the probe.
    if let Some(mut tx) = local.take() {
        let _ = blocking(move || tx.abort()).await;
    }
    let mut result = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(s)) => {
            let mut r = s.result;
            r.detail = format!("step `{}`: {}", s.step, r.detail);
            r.with_data("failed_step", s.step)
        }
        Err(_) => {
            let done: Vec<&str> = phases.map.keys().map(String::as_str).collect();
            let hung = hung_phase(&done);
            HopResult::fail(
                KIND,
                Cause::Timeout,
                format!(
                    "no answer within {}: hung at {} (after: {})",
                    humantime::format_duration(limit),
                    hung.replace('_', " "),
                    done.join(", ")
                ),
            )
            .with_hint(timeout_hint(hung))
            .with_data("failed_step", hung.replace('_', " "))
        }
    };
    result = result.with_data("address", addr.to_string());
    if let Some(e) = facts.encryption {
        result = result.with_data("encryption", e);
    }
    if let Some(id) = &facts.local_tx_id {
        result = result.with_data("local_tx_id", id.clone());
    }
    if let Some(a) = &facts.dtc_address {
        let prefix: String = a.iter().take(16).map(|b| format!("{b:02x}")).collect();
        result = result
            .with_data("dtc_address_len", a.len())
            .with_data("dtc_address_prefix", prefix);
        // The name this host's MSDTC was told to contact (hop `dtc_name` checks it).
        if let Some(host) = dtcprobe_wire::dtco::decode_whereabouts(a)
            .ok()
            .and_then(|w| w.host().map(str::to_string))
        {
            result = result.with_data("tm_host", host);
        }
    }
    if let Some(n) = facts.cookie_len {
        result = result.with_data("cookie_len", n);
    }
    if let Some(d) = facts.server_descriptor {
        result = result.with_data("server_descriptor", format!("0x{d:016x}"));
    }
    if let Some(e) = &facts.ended_by {
        result = result.with_data("ended_by", e.clone());
    }
    if let Some(n) = facts.unenlist_error {
        result = result.with_data("unenlist_error", n);
    }
    if facts.statements > 0 {
        result = result.with_data("statements", facts.statements);
    }
    result
        .with_data("phase_seconds", Json::Object(phases.map))
        .with_duration(phases.started.elapsed())
}

/// What the flow leaves behind however it ends (the hop's data, and this host's transaction to
/// abort), kept by [`run_enlist`] when the flow is cut off by its deadline.
struct FlowState {
    facts: Facts,
    phases: Phases,
    local: Option<Box<dyn LocalTransaction>>,
}

async fn enlist_flow(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    dtc: Arc<dyn LocalDtc>,
    marker: &str,
    connect_limit: Duration,
    state: &mut FlowState,
) -> Result<HopResult, Stop> {
    let FlowState {
        facts,
        phases,
        local,
    } = state;
    // 1. This host's MSDTC begins the transaction.
    let begun = blocking(move || dtc.begin())
        .await
        .map_err(|f| tds_stop("local begin", &f))?;
    let tx = begun.map_err(|e| local_stop("local begin", LocalPhase::Begin, &e))?;
    facts.local_tx_id = Some(tx.id());
    *local = Some(tx);
    phases.done("local_begin");

    // 2. Our own TDS session.
    let pw = password.as_ref().map(Secret::expose).unwrap_or("");
    let (mut s, info) = Session::open(addr, t, pw, connect_limit)
        .await
        .map_err(|f| login_stop(t, &f))?;
    facts.encryption = Some(info.encryption.as_str());
    phases.done("login");

    let result = enlisted_work(&mut s, marker, facts, phases, local).await;
    s.close().await;
    result
}

async fn enlisted_work(
    s: &mut Session,
    marker: &str,
    facts: &mut Facts,
    phases: &mut Phases,
    local: &mut Option<Box<dyn LocalTransaction>>,
) -> Result<HopResult, Stop> {
    // 3. Where is the SQL host's MSDTC?
    let tokens = s
        .tm_request(&TmRequest::GetDtcAddress)
        .await
        .map_err(|f| tds_stop("get DTC address", &f))?;
    if let Some(f) = first_error(&tokens) {
        return Err(server_stop("get DTC address", "get DTC address", f));
    }
    let whereabouts = dtc_address(&tokens).ok_or_else(|| {
        tds_stop(
            "get DTC address",
            &Failure::Protocol(
                "the answer to TM_GET_DTC_ADDRESS carries no address (no binary row, no \
                 ENVCHANGE 16)"
                    .into(),
            ),
        )
    })?;
    facts.dtc_address = Some(whereabouts.clone());
    phases.done("get_dtc_address");

    // 4. This host's MSDTC exports the transaction to it: the first MSDTC-to-MSDTC contact, in
    // both directions (the SQL host's MSDTC connects back to this host during the export).
    let mut tx = local.take().ok_or_else(|| {
        tds_stop(
            "local export",
            &Failure::Protocol("no local transaction".into()),
        )
    })?;
    let (tx, exported) = blocking(move || {
        let r = export_retrying(tx.as_mut(), &whereabouts);
        (tx, r)
    })
    .await
    .map_err(|f| tds_stop("local export", &f))?;
    *local = Some(tx);
    let cookie = exported.map_err(|e| local_stop("local export", LocalPhase::Export, &e))?;
    facts.cookie_len = Some(cookie.len());
    // An empty cookie in TM_PROPAGATE_XACT means "unenlist" (MS-TDS 2.2.6.9): sent, it would
    // make SQL Server leave a transaction instead of joining this one, and the hop would test
    // nothing. A successful Export never returns one; refuse it here.
    if cookie.is_empty() {
        return Err(stop(
            "local export",
            HopResult::fail(
                KIND,
                Cause::DtcUnavailable,
                "this host's MSDTC exported the transaction with an EMPTY cookie; not sent: an \
                 empty TM_PROPAGATE_XACT cookie means unenlist",
            )
            .with_hint(
                "this host's MSDTC answered ITransactionExport::Export with success and no \
                 cookie: restart the MSDTC service here and run the check again; if it persists, \
                 reinstall MSDTC (`msdtc -uninstall`, `msdtc -install`)",
            ),
        ));
    }
    phases.done("local_export");

    // 5. SQL Server imports it. Push propagation: its MSDTC already holds the transaction (the
    // export pushed it there, and the SQL host's MSDTC called this host back during the
    // export); the cookie names it.
    let tokens = s
        .tm_request(&TmRequest::Propagate { cookie })
        .await
        .map_err(|f| tds_stop("propagate", &f))?;
    if let Some(f) = first_error(&tokens) {
        return Err(server_stop("propagate", "propagate", f));
    }
    if s.descriptor == 0 {
        // Some servers answer with the descriptor as a one-row varbinary result instead.
        if let Some(d) = first_binary(&tokens).and_then(|b| descriptor_from_bytes(&b)) {
            s.descriptor = d;
        }
    }
    if s.descriptor == 0 {
        return Err(tds_stop(
            "propagate",
            &Failure::Unexpected(
                "SQL Server accepted TM_PROPAGATE_XACT but named no transaction (no ENVCHANGE 11 \
                 with a descriptor)"
                    .into(),
            ),
        ));
    }
    facts.server_descriptor = Some(s.descriptor);
    phases.done("propagate");

    // 6. The usual #temp work, inside the enlisted transaction.
    let work: Vec<(&'static str, String)> = tx_statements(HopKind::TxLocal, None, marker)
        .into_iter()
        .filter(|(name, _)| matches!(*name, "create #temp table" | "insert" | "read back"))
        .collect();
    for (name, sql) in &work {
        let tokens = s.batch(sql).await.map_err(|f| tds_stop(name, &f))?;
        facts.statements += 1;
        if let Some(f) = first_error(&tokens) {
            return Err(server_stop(name, name, f));
        }
        if *name == "read back" {
            let row = first_row(&tokens);
            let want = [Value::Int(1), Value::Text(marker.to_string())];
            if row.as_deref() != Some(&want[..]) {
                return Err(tds_stop(
                    name,
                    &Failure::Unexpected(format!(
                        "read back {row:?} inside the enlisted transaction instead of the row \
                         just inserted"
                    )),
                ));
            }
        }
    }
    phases.done("work");

    // 7. This host aborts: every enlisted party must roll back.
    let mut tx = local.take().ok_or_else(|| {
        tds_stop(
            "local abort",
            &Failure::Protocol("no local transaction".into()),
        )
    })?;
    let aborted = blocking(move || tx.abort())
        .await
        .map_err(|f| tds_stop("local abort", &f))?;
    aborted.map_err(|e| local_stop("local abort", LocalPhase::Abort, &e))?;
    phases.done("local_abort");

    // 8. SQL Server must say the transaction is over. Its MSDTC hears of the abort
    // asynchronously, so ask a bounded number of times. The question names the enlisted
    // descriptor (after an ENVCHANGE 10 the session keeps it: see Session::follow_transaction),
    // as SqlClient's next request would.
    let enlisted = s.descriptor;
    let mut ended_by = None;
    for attempt in 0..20 {
        let tokens = s
            .batch("SELECT @@TRANCOUNT AS trancount")
            .await
            .map_err(|f| tds_stop("verify ended", &f))?;
        ended_by = ended_signal(&tokens);
        if ended_by.is_some() {
            break;
        }
        if let Some(f) = first_error(&tokens) {
            return Err(tds_stop("verify ended", &f));
        }
        if attempt < 19 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let Some(ended_by) = ended_by else {
        return Err(tds_stop(
            "verify ended",
            &Failure::Unexpected(format!(
                "this host aborted the transaction, but SQL Server still runs the session in \
                 descriptor 0x{enlisted:016x} (no ENVCHANGE 10/12/17 nor error 8525/3971 \
                 within 2 s)"
            )),
        ));
    };
    facts.ended_by = Some(ended_by);
    // Back to the NULL transaction, as drivers do (propagate with an empty cookie), in the
    // descriptor the session is still bound to unless an ENVCHANGE 12/17 released it already;
    // the descriptor is cleared only once the server took the unenlist.
    let tokens = s.unenlist().await.map_err(|f| tds_stop("unenlist", &f))?;
    // A refusal here is noted, not fatal: what matters is the check below (MS-TDS does not
    // say how SQL Server answers an unenlist after the transaction already ended).
    if let Some(Failure::Server { number, .. }) = first_error(&tokens) {
        facts.unenlist_error = Some(number);
    }

    // 9. Nothing persisted: the #temp table created inside the transaction is gone.
    let tokens = s
        .batch("SELECT id, note FROM #dtcprobe")
        .await
        .map_err(|f| tds_stop("verify rolled back", &f))?;
    match first_error(&tokens) {
        Some(Failure::Server { number: 208, .. }) => {}
        Some(f) => return Err(tds_stop("verify rolled back", &f)),
        None => {
            return Err(tds_stop(
                "verify rolled back",
                &Failure::Unexpected(format!(
                    "after the abort, #dtcprobe still exists with {:?}: the work done inside the \
                     enlisted transaction was NOT rolled back",
                    first_row(&tokens)
                )),
            ))
        }
    }
    phases.done("verify");

    let tx_id = facts.local_tx_id.clone().unwrap_or_default();
    Ok(HopResult::pass(
        KIND,
        format!(
            "this host's MSDTC began transaction {tx_id}; SQL Server enlisted in it (descriptor \
             0x{enlisted:016x}), ran the #temp work inside it, and ended it when this host \
             aborted ({}); nothing persisted",
            facts.ended_by.as_deref().unwrap_or("?")
        ),
    ))
}

/// The phases of the hop, in the order they run (`data.phase_seconds` keys).
const PHASES: [&str; 8] = [
    "local_begin",
    "login",
    "get_dtc_address",
    "local_export",
    "propagate",
    "work",
    "local_abort",
    "verify",
];

/// Pure: the phase a hop that ran out of time was in: the first one not done.
fn hung_phase(done: &[&str]) -> &'static str {
    PHASES
        .iter()
        .find(|p| !done.contains(p))
        .copied()
        .unwrap_or("verify")
}

/// Pure: what a hang at `phase` means. MS-DTCO push propagation: at the local export this
/// host's MSDTC opens a session with the SQL host's MSDTC, and the SQL host's MSDTC connects
/// back to this host during that export (MSDTC sessions are RPC in both directions). So a
/// silently dropped way BACK (SQL zone -> this host) hangs the export, not the propagate; by
/// TM_PROPAGATE_XACT both MSDTCs already hold the transaction and SQL Server imports it there.
pub fn timeout_hint(phase: &str) -> String {
    match phase {
        "local_export" => format!(
            "the local export hung. MS-DTCO push propagation: this host's MSDTC connects to the \
             SQL host's MSDTC (the name from TM_GET_DTC_ADDRESS; see hop dtc_name) and the SQL \
             host's MSDTC connects BACK to this host during the export, so packets silently \
             dropped in EITHER direction hang here until MSDTC's own timeout: from this zone to \
             the SQL host and from the SQL zone to THIS host, TCP 135 and the dynamic RPC range; \
             the SQL host must also resolve this host's name. {}",
            classify::RPC_BOTH_WAYS
        ),
        "propagate" => format!(
            "SQL Server's import (TM_PROPAGATE_XACT) hung after a successful export, when both \
             MSDTCs already had the transaction: SQL Server's MSDTC stopped answering it \
             (a hung MSDTC on the SQL host, or the session between the two MSDTCs cut after \
             the export by a firewall dropping it). {}",
            classify::RPC_BOTH_WAYS
        ),
        "local_begin" | "local_abort" => "THIS host's MSDTC did not answer: check that the \
             Distributed Transaction Coordinator service runs here and is not hung (the \
             Application and System event logs)"
            .to_string(),
        "login" | "get_dtc_address" => "SQL Server stopped answering this hop's own session: \
             a hung server, or a firewall/IPS that let the login through and then dropped the \
             traffic"
            .to_string(),
        _ => format!(
            "a step of the enlistment hung after SQL Server enlisted: one MSDTC waiting for the \
             other. {}",
            classify::RPC_BOTH_WAYS
        ),
    }
}

/// How often, and how far apart, an export answered XACT_E_ALREADYINPROGRESS is tried again:
/// what System.Transactions' DtcProxyShim does (100 x 50 ms), since MSDTC answers so while it is
/// still busy with the transaction (a previous propagation), not because the path is broken.
const EXPORT_RETRIES: u32 = 100;
const EXPORT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// `tx.export`, tried again on XACT_E_ALREADYINPROGRESS (blocking; bounded by the retries and
/// by the hop's own limit around it).
fn export_retrying(tx: &mut dyn LocalTransaction, whereabouts: &[u8]) -> Result<Vec<u8>, DtcError> {
    let mut attempt = 0;
    loop {
        match tx.export(whereabouts) {
            Err(e) if e.hresult == dtc::XACT_E_ALREADYINPROGRESS && attempt < EXPORT_RETRIES => {
                attempt += 1;
                std::thread::sleep(EXPORT_RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

fn first_row(tokens: &[Token]) -> Option<Vec<Value>> {
    tokens.iter().find_map(|t| match t {
        Token::Row(v) => Some(v.clone()),
        _ => None,
    })
}

/// How the reply says the enlisted transaction is over, if it does.
fn ended_signal(tokens: &[Token]) -> Option<String> {
    for t in tokens {
        match t {
            Token::EnvChange { kind, .. }
                if [ENV_TRANSACTION_ENDED, ENV_ROLLBACK_TRAN, ENV_DEFECT_TRAN].contains(kind) =>
            {
                return Some(format!("envchange_{kind}"));
            }
            Token::Error(m) if ENDED_ERRORS.contains(&m.number) => {
                return Some(format!("error_{}", m.number));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtcprobe_wire::tds::token::ServerMessage;

    #[test]
    fn ended_signals() {
        let env = |kind| Token::EnvChange {
            kind,
            new: vec![],
            old: vec![1; 8],
        };
        assert_eq!(ended_signal(&[env(17)]).as_deref(), Some("envchange_17"));
        assert_eq!(ended_signal(&[env(10)]).as_deref(), Some("envchange_10"));
        assert_eq!(ended_signal(&[env(8)]), None);
        let err = |number| {
            Token::Error(ServerMessage {
                number,
                state: 1,
                class: 16,
                text: String::new(),
                server: String::new(),
                procedure: String::new(),
                line: 1,
            })
        };
        assert_eq!(ended_signal(&[err(8525)]).as_deref(), Some("error_8525"));
        assert_eq!(ended_signal(&[err(208)]), None);
    }

    /// Finding 7 of issue 23: a hang at the export is where a dropped way back shows (push
    /// propagation calls back during the export); the propagate's hint does not claim the call
    /// back happens there.
    #[test]
    fn a_hang_is_named_by_its_phase_and_the_export_names_the_way_back() {
        assert_eq!(
            hung_phase(&["local_begin", "login", "get_dtc_address"]),
            "local_export"
        );
        assert_eq!(hung_phase(&[]), "local_begin");
        assert_eq!(hung_phase(&PHASES), "verify");
        let export = timeout_hint("local_export");
        for want in [
            "push propagation",
            "BACK to this host during the export",
            "SQL zone to THIS host",
            "TCP 135",
        ] {
            assert!(export.contains(want), "{want}: {export}");
        }
        let propagate = timeout_hint("propagate");
        assert!(
            propagate.contains("after a successful export"),
            "{propagate}"
        );
        assert!(
            !propagate.contains("calls back") && !propagate.contains("pulls"),
            "{propagate}"
        );
        assert!(timeout_hint("local_begin").contains("THIS host's MSDTC"));
    }

    #[test]
    fn address_from_row_or_envchange() {
        let row = vec![
            Token::ColMetadata(vec![]),
            Token::Row(vec![Value::Bytes(vec![1, 2])]),
        ];
        assert_eq!(dtc_address(&row), Some(vec![1, 2]));
        let env = vec![Token::EnvChange {
            kind: 16,
            new: vec![3],
            old: vec![],
        }];
        assert_eq!(dtc_address(&env), Some(vec![3]));
        assert_eq!(dtc_address(&[]), None);
    }

    #[cfg(not(windows))]
    #[test]
    fn other_platforms_have_no_local_dtc() {
        assert_eq!(this_host_dtc().err(), Some(NEEDS_WINDOWS));
    }
}
