//! Keeps the informational messages (INFO tokens) SQL Server sends before an error.
//!
//! Why: before error 7391 SQL Server relays what the linked server's provider said, e.g.
//! "The partner transaction manager has disabled its support for remote/network transactions."
//! (error 7412, class 0), which names the MSDTC setting to change. tiberius does not return INFO
//! tokens to the caller; it only logs each one's text as a DEBUG event (target
//! `tiberius::tds::stream::token`). [`capture`] runs a future under its own tracing subscriber
//! that records those texts, so the report can quote them.
//!
//! Which events are INFO texts: that module also logs ENVCHANGE and LOGINACK at DEBUG, with the
//! same shape (one `message` field). They are told apart by their fixed renderings (tiberius's
//! `Display` of an ENVCHANGE, "<program> version <n>" of a LOGINACK), listed in
//! [`is_not_info`]; an integration test (a peer sending INFO before 7391) pins the behaviour.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const TOKEN_TARGET: &str = "tiberius::tds::stream::token";
/// At most this many messages are kept (a server can send many).
const KEEP: usize = 8;

/// The texts seen so far, shared with the caller.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// Takes the messages seen since the last call.
    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// Pure: renderings tiberius logs in the same place that are not INFO messages.
pub fn is_not_info(text: &str) -> bool {
    const ENVCHANGE: &[&str] = &[
        "Database change from",
        "Language change from",
        "Character set change from",
        "Packet size change from",
        "SQL collation change",
        "SQL collation changed to",
        "Begin transaction",
        "Commit transaction",
        "Rollback transaction",
        "Defect transaction",
        "Server requested routing",
        "Fallback mirror server",
        "Ignored env change",
    ];
    ENVCHANGE.iter().any(|p| text.starts_with(p))
        || (text.contains(" version ") && text.starts_with("Microsoft SQL Server"))
}

struct MessageText(Option<String>);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }
}

struct CaptureLayer(Captured);

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::DEBUG || meta.target() != TOKEN_TARGET {
            return;
        }
        let mut text = MessageText(None);
        event.record(&mut text);
        let Some(text) = text.0 else { return };
        if is_not_info(&text) {
            return;
        }
        if let Ok(mut v) = (self.0).0.lock() {
            if v.len() < KEEP {
                v.push(text);
            }
        }
    }
}

/// Runs `fut` with a subscriber that records tiberius's INFO texts into the returned
/// [`Captured`]. (Inside, dtcprobe's own log output for that future is not shown: the hop's
/// result carries what matters.)
pub fn capture<F: Future>(fut: F) -> (Captured, impl Future<Output = F::Output>) {
    let captured = Captured::default();
    let subscriber =
        tracing_subscriber::registry().with(CaptureLayer(captured.clone()).with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TOKEN_TARGET, Level::DEBUG),
        ));
    (captured, fut.with_subscriber(subscriber))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envchange_and_loginack_renderings_are_not_info() {
        for t in [
            "Begin transaction",
            "Rollback transaction",
            "Database change from 'master' to 'app'",
            "Microsoft SQL Server version 1946157060",
        ] {
            assert!(is_not_info(t), "{t}");
        }
        assert!(!is_not_info(
            "The partner transaction manager has disabled its support for remote/network transactions."
        ));
    }

    #[tokio::test]
    async fn captures_debug_events_of_the_token_target_only() {
        let (captured, fut) = capture(async {
            tracing::event!(target: "tiberius::tds::stream::token", Level::DEBUG, "{}", "partner said no");
            tracing::event!(target: "tiberius::tds::stream::token", Level::DEBUG, "{}", "Begin transaction");
            tracing::event!(target: "tiberius::other", Level::DEBUG, "{}", "elsewhere");
            tracing::event!(target: "tiberius::tds::stream::token", Level::TRACE, "{}", "trace");
        });
        fut.await;
        assert_eq!(captured.take(), vec!["partner said no".to_string()]);
        assert!(captured.take().is_empty());
    }
}
