//! `dtcprobe agent --service`: the agent under the Windows service control manager (SCM).
//!
//! Register it once (elevated):
//! `sc.exe create dtcprobe-agent start= auto binPath= "C:\dtcprobe\dtcprobe.exe agent --service
//! --listen 0.0.0.0:7135 --key-file C:\dtcprobe\agent.key -c C:\dtcprobe\agent.toml"`.
//! The SCM's Stop and system shutdown stop the agent the same way SIGTERM does on Linux.
//!
//! As a service the agent's stderr goes nowhere, so its start line, its stop and a failure are
//! also written to the Windows Event Log (Application log, source `dtcprobe-agent`). No message
//! file is registered: Event Viewer shows the text under "the description for Event ID ... cannot
//! be found", which is how tools without a message DLL appear there.

use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;

use tracing::{error, info};
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use super::protocol::{AgentIdentity, Key};
use super::AgentConfig;

/// The service name `dtcprobe agent install` registers (and `sc.exe create` must use).
pub use super::service_name::SERVICE_NAME;

struct Launch {
    start_line: String,
    listen: Option<String>,
    key: Key,
    identity: AgentIdentity,
    config: AgentConfig,
    runtime: tokio::runtime::Handle,
}

static LAUNCH: OnceLock<Launch> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the SCM; blocks (call it on a blocking thread) until the service stops.
pub fn dispatch(
    listen: Option<String>,
    key: Key,
    identity: AgentIdentity,
    config: AgentConfig,
    runtime: tokio::runtime::Handle,
    start_line: String,
) -> Result<(), String> {
    LAUNCH
        .set(Launch {
            start_line,
            listen,
            key,
            identity,
            config,
            runtime,
        })
        .map_err(|_| "the service was already started".to_string())?;
    // From a console, StartServiceCtrlDispatcher fails (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT,
    // 1063) instead of blocking: at once on Windows, after about 10 s under wine.
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
        let why = match &e {
            windows_service::Error::Winapi(io) => io.to_string(),
            other => other.to_string(),
        };
        format!(
            "--service: not started by the service control manager ({why}). --service is only \
             for the service `dtcprobe agent install` registers; from a console run `dtcprobe \
             agent` without --service"
        )
    })
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(launch) = LAUNCH.get() else {
        return;
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let handler = move |event| match event {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let status = match service_control_handler::register(SERVICE_NAME, handler) {
        Ok(h) => h,
        Err(e) => {
            error!(error = %e, "cannot register the service control handler");
            return;
        }
    };
    let report = |state, accept, exit_code: u32| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(exit_code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        });
    };
    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        0,
    );
    let events = event_log::EventLog::open(SERVICE_NAME);
    events.report(
        event_log::Level::Information,
        &format!("dtcprobe agent: {}", launch.start_line),
    );
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        info!("service stop requested");
    };
    let result = launch.runtime.block_on(super::server::run_until(
        launch.listen.as_deref(),
        launch.key.clone(),
        launch.identity.clone(),
        launch.config.clone(),
        shutdown,
    ));
    let exit_code = match result {
        Ok(()) => {
            events.report(event_log::Level::Information, "dtcprobe agent: stopped");
            0
        }
        Err(e) => {
            error!(error = %e, "agent failed");
            events.report(
                event_log::Level::Error,
                &format!("dtcprobe agent: failed: {e}"),
            );
            // ERROR_SERVICE_SPECIFIC_ERROR would need a second code; a generic failure is enough
            // for the SCM's recovery actions.
            1
        }
    };
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
    );
}

/// The Application event log, through `RegisterEventSourceW`/`ReportEventW`.
mod event_log {
    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::EventLog::{
        DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
        EVENTLOG_INFORMATION_TYPE,
    };

    pub enum Level {
        Information,
        Error,
    }

    /// A registered event source; writing is best effort (a full or unavailable log must not stop
    /// the agent).
    pub struct EventLog(HANDLE);

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(std::iter::once(0)).collect()
    }

    impl EventLog {
        pub fn open(source: &str) -> EventLog {
            let source = wide(source);
            // SAFETY: a NUL-terminated UTF-16 source name; null server = this machine.
            EventLog(unsafe { RegisterEventSourceW(std::ptr::null(), source.as_ptr()) })
        }

        pub fn report(&self, level: Level, text: &str) {
            if self.0.is_null() {
                return;
            }
            let kind = match level {
                Level::Information => EVENTLOG_INFORMATION_TYPE,
                Level::Error => EVENTLOG_ERROR_TYPE,
            };
            let text = wide(text);
            let strings = [text.as_ptr()];
            // SAFETY: one NUL-terminated string, no user SID, no raw data.
            unsafe {
                ReportEventW(
                    self.0,
                    kind,
                    0,
                    0,
                    std::ptr::null_mut(),
                    1,
                    0,
                    strings.as_ptr(),
                    std::ptr::null(),
                )
            };
        }
    }

    impl Drop for EventLog {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the handle came from RegisterEventSourceW.
                unsafe { DeregisterEventSource(self.0) };
            }
        }
    }
}
