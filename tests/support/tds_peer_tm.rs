//! The test peer's transaction manager requests (TDS packet type 0x0E), and a scripted MSDTC for
//! "this host" that the peer's own (pretend) MSDTC can pull transactions from.
//!
//! A child module of `tds_peer` (it works on the peer's private session state). What it answers,
//! as SQL Server does:
//! - TM_GET_DTC_ADDRESS: a one-row result set with one VARBINARY column (type 0x25, as SQL
//!   Server sends it) holding the configured whereabouts (by default an SWhereabouts naming
//!   [`PEER_DTC_HOST`], see [`whereabouts_naming`]); error 8501 when "the server's MSDTC is
//!   unavailable" (`TmConfig::whereabouts = None`).
//! - TM_PROPAGATE_XACT: imports the cookie when it is one the scripted client MSDTC exported, to
//!   this server's whereabouts, for a live transaction: ENVCHANGE 11 (enlist DTC) with a new
//!   descriptor; otherwise error 8509 with the reason (or the scripted error, or a dropped
//!   connection). An empty cookie unenlists (ENVCHANGE 12 when enlisted).
//! - TM_BEGIN/COMMIT/ROLLBACK/SAVE/PROMOTE (what ODBC Driver 18 sends with autocommit off):
//!   ENVCHANGE 8/9/10/15 with the descriptors; errors 3902/3903/628/3971 where SQL Server
//!   refuses.
//! - While enlisted, every batch must carry the enlisted descriptor in ALL_HEADERS (else 3971).
//!   When the scripted MSDTC has aborted the transaction, the session's work is rolled back
//!   (temp tables gone) and the next request learns it as `TmConfig::ending` says, one of the
//!   endings MS-TDS allows: ENVCHANGE 17 (transaction ended; MS-TDS sends it only for bound
//!   sessions) and 8525 for a request still naming the ended descriptor; 8525 alone; or
//!   ENVCHANGE 10 (rolled back), after which the client keeps naming the retained descriptor
//!   (SqlClient's `_retainedTransactionId`) until it unenlists.
//! - `TmConfig::strict_descriptor`: every request, batches and TM requests alike, must name the
//!   descriptor the session's DTC transaction is addressed by (the enlisted one; after an
//!   ending without ENVCHANGE 17, still that one; after ENVCHANGE 17, 0) until the unenlist is
//!   done; anything else gets 3971 ("failed to resume the transaction"), as SQL Server answers a
//!   descriptor it cannot resume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dtcprobe::hops::mssql::enlist::dtc::{DtcError, LocalDtc, LocalTransaction};
use dtcprobe_wire::tds::reply::varbinary_result;
use dtcprobe_wire::tds::tm::{
    decode_sql_batch, decode_tm_request, envchange_tx, TmRequest, ENV_COMMIT_TRAN, ENV_DEFECT_TRAN,
    ENV_ENLIST_DTC, ENV_PROMOTE_TRAN, ENV_ROLLBACK_TRAN, ENV_TRANSACTION_ENDED,
};
use dtcprobe_wire::tds::token::{done, DONE_ERROR};

use super::{error, Event, Session};

/// What the peer's transaction manager side does (a field of `PeerConfig`).
#[derive(Debug, Clone)]
pub struct TmConfig {
    /// What TM_GET_DTC_ADDRESS returns; `None`: this server's MSDTC is unavailable (8501).
    pub whereabouts: Option<Vec<u8>>,
    /// The client host's MSDTC, as this server's MSDTC reaches it; `None`: unreachable (every
    /// propagate fails with 8509 XACT_E_CONNECTION_DOWN, the outage this hop exists for).
    pub client_msdtc: Option<ScriptedMsdtc>,
    /// Refuse every propagate with this error (number, state, text).
    pub propagate_error: Option<(i32, u8, String)>,
    /// Close the connection on a propagate, without answering.
    pub drop_on_propagate: bool,
    /// How the session learns that its DTC transaction ended (after the client MSDTC's abort).
    pub ending: Ending,
    /// Answer an unenlist (TM_PROPAGATE_XACT with an empty cookie) with ENVCHANGE 12 (defect)
    /// before the DONE; `false`: a plain error-free DONE.
    pub unenlist_defects: bool,
    /// Refuse (3971) requests that do not name the descriptor the DTC transaction is addressed
    /// by (see the module header).
    pub strict_descriptor: bool,
    /// What the peer's transaction manager side saw.
    pub events: Arc<Mutex<Vec<TmEvent>>>,
}

impl Default for TmConfig {
    fn default() -> Self {
        TmConfig {
            whereabouts: Some(whereabouts_naming(PEER_DTC_HOST)),
            client_msdtc: None,
            propagate_error: None,
            drop_on_propagate: false,
            ending: Ending::Envchange17,
            unenlist_defects: true,
            strict_descriptor: false,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl TmConfig {
    pub fn events(&self) -> Vec<TmEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// How the server tells the session its DTC transaction is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// ENVCHANGE 17 on the next request, and 8525 if that request names the ended descriptor.
    Envchange17,
    /// No ENVCHANGE: every request naming the ended descriptor gets 8525.
    Error8525,
    /// ENVCHANGE 10 (rollback) on the next request, which then runs.
    Rollback10,
}

impl Ending {
    pub const ALL: [Ending; 3] = [Ending::Envchange17, Ending::Error8525, Ending::Rollback10];
}

/// The host the peer's MSDTC names by default: `localhost` resolves on every test host without
/// a DNS query (the hosts file; its PTR is answered locally, RFC 6761), so hop `dtc_name` never
/// sends a lookup off the machine. Tests that need a name which resolves, or does not, in their
/// own zones pass [`whereabouts_naming`] another one.
pub const PEER_DTC_HOST: &str = "localhost";

/// An SWhereabouts (MS-DTCO 2.2.5.11) as a Windows MSDTC of 2008 or later describes itself:
/// an MsdtcV1 entry (TCP, a contact identifier, the name in Latin-1) and an MsdtcV2 entry (the
/// same name in UTF-16), encoded by the codec dtcprobe decodes with, whose layout its own unit
/// tests check byte by byte against the specification.
pub fn whereabouts_naming(host: &str) -> Vec<u8> {
    use dtcprobe_wire::dtco::{encode_whereabouts, Guid, TmProtocol, Whereabouts, PROT_IP_TCP};
    encode_whereabouts(&Whereabouts {
        protocols: vec![
            TmProtocol::MsdtcV1 {
                com_protocols: PROT_IP_TCP,
                endpoint_id: Guid(*b"\x9a\x7b\x3c\x11peer-msdtc\x00\x01"),
                host: host.to_string(),
            },
            TmProtocol::MsdtcV2 {
                host: host.to_string(),
            },
        ],
    })
}

/// SQL Server's texts (sys.messages) for the errors the peer sends.
pub const TEXT_8501: &str = "MSDTC on server 'PEER' is unavailable.";
pub const TEXT_8509_PREFIX: &str =
    "Import of Microsoft Distributed Transaction Coordinator (MS DTC) transaction failed: ";
pub const TEXT_8522: &str =
    "Microsoft Distributed Transaction Coordinator (MS DTC) has stopped this transaction.";
pub const TEXT_8525: &str = "Distributed transaction completed. Either enlist this session in a new transaction or the NULL transaction.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmEvent {
    Request {
        kind: &'static str,
        descriptor: u64,
    },
    Enlisted {
        descriptor: u64,
    },
    Refused {
        number: i32,
    },
    BatchInTransaction {
        descriptor: u64,
        sql: String,
    },
    /// A batch after the DTC transaction ended and before the unenlist.
    BatchAfterEnd {
        descriptor: u64,
        sql: String,
    },
    /// A request naming a descriptor other than the one the DTC transaction is addressed by
    /// (`strict_descriptor`).
    WrongDescriptor {
        named: u64,
        expected: u64,
    },
    /// The scripted MSDTC aborted the transaction: the work is rolled back.
    Ended {
        descriptor: u64,
        rows_discarded: usize,
    },
    Unenlisted {
        descriptor: u64,
    },
}

/// The per-session state (a field of the peer's `Session`).
#[derive(Debug, Default)]
pub struct TmSession {
    /// The client MSDTC transaction this session is enlisted in.
    enlisted: Option<[u8; 16]>,
    /// The descriptor of a DTC transaction that ended under the session (until the unenlist).
    ended: Option<u64>,
    /// The end was announced with ENVCHANGE 17: the client now names descriptor 0.
    announced: bool,
}

impl TmSession {
    /// Enlisted, or ended and not yet unenlisted: batches go through [`batch`].
    pub fn in_dtc(&self) -> bool {
        self.enlisted.is_some() || self.ended.is_some()
    }
}

/// The descriptor requests must name while the session is in (or just out of) a DTC
/// transaction; `None` outside one.
fn expected_descriptor(s: &Session<'_>) -> Option<u64> {
    if s.tm.enlisted.is_some() {
        Some(s.descriptor)
    } else {
        s.tm.ended.map(|d| if s.tm.announced { 0 } else { d })
    }
}

/// Under `strict_descriptor`: the 3971 for a request naming the wrong descriptor.
fn wrong_descriptor(s: &Session<'_>, named: u64) -> Option<Vec<u8>> {
    let expected = expected_descriptor(s)?;
    if !s.cfg.tm.strict_descriptor || named == expected {
        return None;
    }
    log(s, TmEvent::WrongDescriptor { named, expected });
    Some(refuse(
        s,
        3971,
        1,
        &format!("The server failed to resume the transaction. Desc:{named:016x}."),
    ))
}

fn log(s: &Session<'_>, e: TmEvent) {
    s.cfg.tm.events.lock().unwrap().push(e);
}

fn refuse(s: &Session<'_>, number: i32, state: u8, text: &str) -> Vec<u8> {
    log(s, TmEvent::Refused { number });
    let mut r = error(number, state, 16, text);
    r.extend(done(DONE_ERROR, 0));
    r
}

/// If the client's MSDTC aborted the enlisted transaction: end it here (rows discarded) and
/// return what tells the client, per `TmConfig::ending`.
fn end_if_aborted(s: &mut Session<'_>) -> Vec<u8> {
    let Some(id) = s.tm.enlisted else {
        return Vec::new();
    };
    let aborted = s
        .cfg
        .tm
        .client_msdtc
        .as_ref()
        .is_some_and(|d| d.is_aborted(&id));
    if !aborted {
        return Vec::new();
    }
    let rows: usize = s.tables.values().map(Vec::len).sum();
    s.tables.clear();
    s.trancount = 0;
    s.tm.enlisted = None;
    s.tm.ended = Some(s.descriptor);
    log(
        s,
        TmEvent::Ended {
            descriptor: s.descriptor,
            rows_discarded: rows,
        },
    );
    let old = s.descriptor.to_le_bytes();
    match s.cfg.tm.ending {
        Ending::Envchange17 => {
            s.tm.announced = true;
            envchange_tx(ENV_TRANSACTION_ENDED, &[], &old)
        }
        Ending::Rollback10 => envchange_tx(ENV_ROLLBACK_TRAN, &[], &old),
        Ending::Error8525 => Vec::new(),
    }
}

/// A transaction manager request. `None`: drop the connection.
pub(super) fn request(s: &mut Session<'_>, payload: &[u8]) -> Option<Vec<u8>> {
    let (header, req) = match decode_tm_request(payload) {
        Ok(x) => x,
        Err(_) => {
            return Some(refuse(
                s,
                4002,
                1,
                "The incoming tabular data stream (TDS) protocol stream is incorrect.",
            ))
        }
    };
    let named = header.map(|h| h.descriptor).unwrap_or(0);
    log(
        s,
        TmEvent::Request {
            kind: req.name(),
            descriptor: named,
        },
    );
    let mut out = end_if_aborted(s);
    if let Some(refusal) = wrong_descriptor(s, named) {
        out.extend(refusal);
        return Some(out);
    }
    let reply = match req {
        // A server whose MSDTC is down (`dtc_available: false`) has no whereabouts to give.
        TmRequest::GetDtcAddress => match &s.cfg.tm.whereabouts {
            Some(w) if s.cfg.dtc_available => varbinary_result("", w),
            _ => refuse(s, 8501, 3, TEXT_8501),
        },
        TmRequest::Propagate { cookie } if cookie.is_empty() => {
            let mut r = Vec::new();
            if s.tm.enlisted.take().is_some() | s.tm.ended.take().is_some() {
                if s.cfg.tm.unenlist_defects {
                    r.extend(envchange_tx(
                        ENV_DEFECT_TRAN,
                        &[],
                        &s.descriptor.to_le_bytes(),
                    ));
                }
                s.trancount = 0;
                s.tm.announced = false;
                log(s, TmEvent::Unenlisted { descriptor: named });
            }
            r.extend(done(0, 0));
            r
        }
        TmRequest::Propagate { cookie } => {
            if s.cfg.tm.drop_on_propagate {
                return None;
            }
            propagate(s, &cookie)
        }
        TmRequest::Begin { .. } => s.begin(),
        TmRequest::Commit { begin_new, .. } | TmRequest::Rollback { begin_new, .. }
            if s.trancount > 0 && named != s.descriptor =>
        {
            let _ = begin_new;
            refuse(
                s,
                3971,
                1,
                &format!("The server failed to resume the transaction. Desc:{named:016x}."),
            )
        }
        TmRequest::Commit { begin_new, .. } => {
            if s.trancount == 0 {
                refuse(
                    s,
                    3902,
                    1,
                    "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                )
            } else {
                s.trancount = 0;
                let mut r = envchange_tx(ENV_COMMIT_TRAN, &[], &s.descriptor.to_le_bytes());
                if begin_new.is_some() {
                    r.extend(s.begin());
                } else {
                    r.extend(done(0, 0));
                }
                r
            }
        }
        TmRequest::Rollback { begin_new, .. } => {
            if s.trancount == 0 {
                refuse(
                    s,
                    3903,
                    1,
                    "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                )
            } else {
                s.trancount = 0;
                s.tables.clear();
                s.tm.enlisted = None;
                let mut r = envchange_tx(ENV_ROLLBACK_TRAN, &[], &s.descriptor.to_le_bytes());
                if begin_new.is_some() {
                    r.extend(s.begin());
                } else {
                    r.extend(done(0, 0));
                }
                r
            }
        }
        TmRequest::Save { name } => {
            if s.trancount == 0 {
                refuse(
                    s,
                    628,
                    0,
                    "Cannot issue SAVE TRANSACTION when there is no active transaction.",
                )
            } else if name.is_empty() {
                refuse(s, 102, 1, "Incorrect syntax near 'SAVE'.")
            } else {
                done(0, 0)
            }
        }
        TmRequest::Promote => {
            if s.trancount == 0 {
                refuse(
                    s,
                    3971,
                    1,
                    "The server failed to resume the transaction. Desc:0000000000000000.",
                )
            } else if s.cfg.tm.whereabouts.is_none() {
                refuse(s, 8501, 3, TEXT_8501)
            } else {
                // The propagation token a promoted transaction hands the client.
                let mut token = b"PEER-PROPAGATION-TOKEN".to_vec();
                token.extend_from_slice(&s.descriptor.to_le_bytes());
                let mut r = envchange_tx(ENV_PROMOTE_TRAN, &token, &[]);
                r.extend(done(0, 0));
                r
            }
        }
    };
    out.extend(reply);
    Some(out)
}

fn propagate(s: &mut Session<'_>, cookie: &[u8]) -> Vec<u8> {
    let Some(whereabouts) = s.cfg.tm.whereabouts.clone() else {
        return refuse(s, 8501, 3, TEXT_8501);
    };
    if let Some((number, state, text)) = s.cfg.tm.propagate_error.clone() {
        return refuse(s, number, state, &text);
    }
    let Some(msdtc) = s.cfg.tm.client_msdtc.clone() else {
        return refuse(
            s,
            8509,
            1,
            &format!("{TEXT_8509_PREFIX}0x8004d01c(XACT_E_CONNECTION_DOWN)."),
        );
    };
    match msdtc.import(cookie, &whereabouts) {
        Err(reason) => refuse(s, 8509, 1, &format!("{TEXT_8509_PREFIX}{reason}.")),
        Ok(id) => {
            s.descriptor = s.descriptor.wrapping_add(0x1_0000_0001);
            s.trancount = 1;
            s.tm.enlisted = Some(id);
            s.tm.ended = None;
            log(
                s,
                TmEvent::Enlisted {
                    descriptor: s.descriptor,
                },
            );
            let mut r = envchange_tx(ENV_ENLIST_DTC, &s.descriptor.to_le_bytes(), &[]);
            r.extend(done(0, 0));
            r
        }
    }
}

/// A SQL batch while the session is enlisted in a DTC transaction.
pub(super) fn batch(s: &mut Session<'_>, payload: &[u8], events: &Mutex<Vec<Event>>) -> Vec<u8> {
    let (header, sql) = decode_sql_batch(payload).unwrap_or((None, String::new()));
    events.lock().unwrap().push(Event::Batch(sql.clone()));
    let named = header.map(|h| h.descriptor).unwrap_or(0);
    let mut out = end_if_aborted(s);
    if let Some(ended) = s.tm.ended {
        // Over on the server; the client has not unenlisted yet.
        log(
            s,
            TmEvent::BatchAfterEnd {
                descriptor: named,
                sql: sql.clone(),
            },
        );
        if named != 0 && named == ended && s.cfg.tm.ending != Ending::Rollback10 {
            out.extend(refuse(s, 8525, 1, TEXT_8525));
        } else if let Some(refusal) = wrong_descriptor(s, named) {
            out.extend(refusal);
        } else {
            out.extend(s.execute(&sql));
        }
        return out;
    }
    if named != s.descriptor {
        return refuse(
            s,
            3971,
            1,
            &format!("The server failed to resume the transaction. Desc:{named:016x}."),
        );
    }
    log(
        s,
        TmEvent::BatchInTransaction {
            descriptor: named,
            sql: sql.clone(),
        },
    );
    s.execute(&sql)
}

// ---------------------------------------------------------------------------------------------
// The scripted MSDTC of "this host" (the client), implementing dtcprobe's `LocalDtc`.

const COOKIE_MAGIC: &[u8; 8] = b"SCRIPTDT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedState {
    Active,
    Exported,
    Aborted,
}

#[derive(Debug, Default)]
struct MsdtcState {
    next: u32,
    txs: HashMap<[u8; 16], ScriptedState>,
    fail_begin: Option<u32>,
    fail_export: Option<u32>,
    fail_abort: Option<u32>,
    /// Export "succeeds" with an empty cookie (a misbehaving MSDTC).
    empty_cookie: bool,
    /// The next this many exports fail with this HRESULT (a busy transaction).
    fail_export_times: Option<(u32, u32)>,
    /// Every export waits this long, then fails with XACT_E_PUSH_COMM_FAILURE: what a real
    /// MSDTC does when the SQL host's MSDTC cannot call back into this zone during the export
    /// (push propagation) and the packets are dropped: it waits for its own RPC timeout.
    hang_export: Option<std::time::Duration>,
    calls: Vec<String>,
}

/// A scripted MSDTC: begins transactions, exports them as cookies that name the target
/// whereabouts, aborts them; its failures are scripted per HRESULT.
/// Clones share the same MSDTC (the test keeps one, the peer and the hop get the others).
#[derive(Debug, Default, Clone)]
pub struct ScriptedMsdtc {
    state: Arc<Mutex<MsdtcState>>,
}

impl ScriptedMsdtc {
    pub fn new() -> ScriptedMsdtc {
        ScriptedMsdtc::default()
    }

    /// As the hop takes it.
    pub fn as_local_dtc(&self) -> Arc<dyn LocalDtc> {
        Arc::new(self.clone())
    }

    pub fn fail_begin(&self, hresult: u32) {
        self.state.lock().unwrap().fail_begin = Some(hresult);
    }

    pub fn fail_export(&self, hresult: u32) {
        self.state.lock().unwrap().fail_export = Some(hresult);
    }

    /// The next `times` exports fail with `hresult`, the ones after succeed.
    pub fn fail_export_times(&self, hresult: u32, times: u32) {
        self.state.lock().unwrap().fail_export_times = Some((hresult, times));
    }

    /// Every export hangs for `d`, then fails (see `MsdtcState::hang_export`).
    pub fn hang_export(&self, d: std::time::Duration) {
        self.state.lock().unwrap().hang_export = Some(d);
    }

    pub fn export_empty_cookie(&self) {
        self.state.lock().unwrap().empty_cookie = true;
    }

    pub fn fail_abort(&self, hresult: u32) {
        self.state.lock().unwrap().fail_abort = Some(hresult);
    }

    /// The calls made, in order (`begin`, `export`, `abort`).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Every transaction's state.
    pub fn states(&self) -> Vec<ScriptedState> {
        self.state.lock().unwrap().txs.values().copied().collect()
    }

    fn is_aborted(&self, id: &[u8; 16]) -> bool {
        self.state.lock().unwrap().txs.get(id) == Some(&ScriptedState::Aborted)
    }

    /// What the server's MSDTC does with a cookie: pull the transaction it names.
    fn import(&self, cookie: &[u8], whereabouts: &[u8]) -> Result<[u8; 16], String> {
        let bad = || "0x8004d015(XACT_E_INVALIDCOOKIE)".to_string();
        if cookie.len() < 24 || &cookie[..8] != COOKIE_MAGIC {
            return Err(bad());
        }
        let id: [u8; 16] = cookie[8..24].try_into().map_err(|_| bad())?;
        if &cookie[24..] != whereabouts {
            // Exported to another transaction manager than this server's.
            return Err(bad());
        }
        match self.state.lock().unwrap().txs.get(&id) {
            Some(ScriptedState::Exported) => Ok(id),
            Some(ScriptedState::Aborted) => Err("0x8004d019(XACT_E_ABORTED)".into()),
            _ => Err("0x8004d00e(XACT_E_NOTRANSACTION)".into()),
        }
    }
}

struct ScriptedTx {
    dtc: ScriptedMsdtc,
    id: [u8; 16],
}

impl LocalDtc for ScriptedMsdtc {
    fn begin(&self) -> Result<Box<dyn LocalTransaction>, DtcError> {
        let mut st = self.state.lock().unwrap();
        st.calls.push("begin".into());
        if let Some(hresult) = st.fail_begin {
            return Err(DtcError {
                call: "ITransactionDispenser::BeginTransaction",
                hresult,
            });
        }
        st.next += 1;
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&st.next.to_le_bytes());
        id[4..].copy_from_slice(b"scripted-tx!");
        st.txs.insert(id, ScriptedState::Active);
        Ok(Box::new(ScriptedTx {
            dtc: self.clone(),
            id,
        }))
    }
}

impl LocalTransaction for ScriptedTx {
    fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn export(&mut self, whereabouts: &[u8]) -> Result<Vec<u8>, DtcError> {
        let hang = {
            let mut st = self.dtc.state.lock().unwrap();
            st.calls.push("export".into());
            st.hang_export
        };
        if let Some(d) = hang {
            std::thread::sleep(d);
            return Err(DtcError {
                call: "ITransactionExport::Export",
                hresult: dtcprobe::hops::mssql::enlist::dtc::XACT_E_PUSH_COMM_FAILURE,
            });
        }
        let mut st = self.dtc.state.lock().unwrap();
        if let Some((hresult, times)) = st.fail_export_times {
            if times > 0 {
                st.fail_export_times = Some((hresult, times - 1));
                return Err(DtcError {
                    call: "ITransactionExport::Export",
                    hresult,
                });
            }
        }
        if let Some(hresult) = st.fail_export {
            return Err(DtcError {
                call: "ITransactionExport::Export",
                hresult,
            });
        }
        st.txs.insert(self.id, ScriptedState::Exported);
        if st.empty_cookie {
            return Ok(Vec::new());
        }
        let mut cookie = COOKIE_MAGIC.to_vec();
        cookie.extend_from_slice(&self.id);
        cookie.extend_from_slice(whereabouts);
        Ok(cookie)
    }

    fn abort(&mut self) -> Result<(), DtcError> {
        let mut st = self.dtc.state.lock().unwrap();
        st.calls.push("abort".into());
        if let Some(hresult) = st.fail_abort {
            return Err(DtcError {
                call: "ITransaction::Abort",
                hresult,
            });
        }
        st.txs.insert(self.id, ScriptedState::Aborted);
        Ok(())
    }
}
