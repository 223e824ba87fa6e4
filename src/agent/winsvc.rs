//! `dtcprobe agent --service`: the agent under the Windows service control manager (SCM).
//!
//! Register it once (elevated):
//! `sc.exe create dtcprobe-agent start= auto binPath= "C:\dtcprobe\dtcprobe.exe agent --service
//! --listen 0.0.0.0:7135 --key-file C:\dtcprobe\agent.key -c C:\dtcprobe\agent.toml"`.
//! The SCM's Stop and system shutdown stop the agent the same way SIGTERM does on Linux.

use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;

use tracing::{error, info};
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use super::protocol::Key;
use super::AgentConfig;

/// The service name `dtcprobe agent install` registers (and `sc.exe create` must use).
pub use super::install::SERVICE_NAME;

struct Launch {
    listen: Option<String>,
    key: Key,
    config: AgentConfig,
    runtime: tokio::runtime::Handle,
}

static LAUNCH: OnceLock<Launch> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hands the process to the SCM; blocks (call it on a blocking thread) until the service stops.
pub fn dispatch(
    listen: Option<String>,
    key: Key,
    config: AgentConfig,
    runtime: tokio::runtime::Handle,
) -> Result<(), String> {
    LAUNCH
        .set(Launch {
            listen,
            key,
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
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
        info!("service stop requested");
    };
    let result = launch.runtime.block_on(super::server::run_until(
        launch.listen.as_deref(),
        launch.key.clone(),
        launch.config.clone(),
        shutdown,
    ));
    let exit_code = match result {
        Ok(()) => 0,
        Err(e) => {
            error!(error = %e, "agent failed");
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
