//! `dtcprobe agent install` and `dtcprobe agent uninstall`: the agent as a Windows service, with
//! an inbound Windows Firewall rule for its port.
//!
//! Everything is resolved before the system is touched ([`plan_install`] is pure apart from
//! reading the key and config files, and runs on every platform): the key and agent config are
//! loaded exactly as the running agent will load them, relative paths become absolute (a service
//! starts in C:\Windows\System32), and the listen address must name a port (the firewall rule
//! needs it). Install is all or nothing: a firewall step that fails removes the service it has
//! just registered.
//!
//! The service is registered through the service control manager API (windows-service's
//! `ServiceManager`): auto start, LocalSystem, `dtcprobe.exe agent --service --listen ...
//! --key-file ...` as its command line.
//!
//! The firewall rule goes through `netsh advfirewall firewall`, not the firewall COM API
//! (INetFwPolicy2): netsh is on every Windows Server since 2008, needs no COM/OLE bindings (the
//! `windows` crate's COM support and a page of unsafe vtable calls), and the rule it makes is
//! the one an admin would type and can read back with the same tool. netsh's exit status is not
//! trusted alone: after adding, `netsh advfirewall firewall show rule name=...` must list the rule,
//! so a netsh that does nothing (wine's is a stub that answers success and prints nothing) makes
//! the install fail instead of claiming a rule that does not exist.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::cmd::{AgentInput, AgentSetup, SetupError};
use crate::exit;

pub use super::service_name::SERVICE_NAME;
/// The name of the inbound firewall rule install adds and uninstall removes.
pub const FIREWALL_RULE_NAME: &str = "dtcprobe-agent";

/// What `dtcprobe agent install` was asked for (plain values).
#[derive(Debug, Clone)]
pub struct InstallInput {
    pub listen: Option<String>,
    pub key_file: PathBuf,
    pub config: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    /// Add the inbound firewall rule for the listen port.
    pub firewall_rule: bool,
    /// Start the service once registered.
    pub start: bool,
}

/// What `dtcprobe agent uninstall` was asked for.
#[derive(Debug, Clone)]
pub struct UninstallInput {
    /// Remove the inbound firewall rule too.
    pub firewall_rule: bool,
}

#[derive(Debug, Error)]
pub enum InstallError {
    #[error(
        "`agent install` and `agent uninstall` manage a Windows service; on this system run the \
         agent under systemd (config/dtcprobe-agent.service)"
    )]
    NotWindows,
    #[error("{0}")]
    Setup(#[from] SetupError),
    #[error("no listen address: pass --listen IP:PORT or set `listen` in the agent config")]
    NoListen,
    #[error(
        "listen address `{0}`: the service needs IP:PORT (e.g. 0.0.0.0:7135), the port for its \
         firewall rule"
    )]
    BadListen(String),
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find this program's own path: {0}")]
    OwnPath(std::io::Error),
    #[error("service control manager: {0}")]
    Service(String),
    #[error("firewall rule: {0}")]
    Firewall(String),
}

impl InstallError {
    pub fn exit_code(&self) -> u8 {
        match self {
            InstallError::NotWindows | InstallError::NoListen | InstallError::BadListen(_) => {
                exit::USAGE
            }
            InstallError::Setup(e) => e.exit_code(),
            InstallError::Path { .. } => exit::CONFIG,
            InstallError::OwnPath(_) | InstallError::Service(_) | InstallError::Firewall(_) => {
                exit::INCONCLUSIVE
            }
        }
    }
}

/// The service to register, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallPlan {
    pub exe: PathBuf,
    /// The service's arguments after the executable.
    pub service_args: Vec<OsString>,
    pub port: u16,
    pub firewall_rule: bool,
    pub start: bool,
}

/// Loads key and config as the agent will, and resolves the service's command line.
pub fn plan_install(input: &InstallInput, exe: PathBuf) -> Result<InstallPlan, InstallError> {
    let setup = AgentSetup::load(AgentInput {
        listen: input.listen.clone(),
        key_file: input.key_file.clone(),
        // Beside the key file: made now if missing, so the service starts with it.
        identity_file: None,
        config: input.config.clone(),
        metrics_listen: input.metrics_listen.clone(),
        service: true,
    })?;
    let listen = setup
        .listen
        .clone()
        .or_else(|| setup.config.listen.clone())
        .ok_or(InstallError::NoListen)?;
    let port = listen
        .parse::<SocketAddr>()
        .map_err(|_| InstallError::BadListen(listen.clone()))?
        .port();
    if port == 0 {
        return Err(InstallError::BadListen(listen));
    }
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|source| InstallError::Path {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut service_args: Vec<OsString> = vec![
        "agent".into(),
        "--service".into(),
        "--listen".into(),
        listen.into(),
        "--key-file".into(),
        absolute(&input.key_file)?.into(),
    ];
    if let Some(config) = &input.config {
        service_args.push("-c".into());
        service_args.push(absolute(config)?.into());
    }
    if let Some(metrics) = &input.metrics_listen {
        service_args.push("--metrics-listen".into());
        service_args.push(metrics.into());
    }
    Ok(InstallPlan {
        exe,
        service_args,
        port,
        firewall_rule: input.firewall_rule,
        start: input.start,
    })
}

/// The `netsh` command-line tokens after `netsh`, exactly as typed at a prompt (the program path is
/// quoted the way netsh documents: `program="C:\Program Files\...\dtcprobe.exe"`).
pub fn netsh_add_rule(port: u16, exe: &Path) -> Vec<String> {
    vec![
        "advfirewall".into(),
        "firewall".into(),
        "add".into(),
        "rule".into(),
        format!("name={FIREWALL_RULE_NAME}"),
        "dir=in".into(),
        "action=allow".into(),
        "protocol=TCP".into(),
        format!("localport={port}"),
        format!("program=\"{}\"", exe.display()),
        "enable=yes".into(),
        "profile=any".into(),
    ]
}

pub fn netsh_show_rule() -> Vec<String> {
    ["advfirewall", "firewall", "show", "rule"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("name={FIREWALL_RULE_NAME}")])
        .collect()
}

pub fn netsh_delete_rule() -> Vec<String> {
    ["advfirewall", "firewall", "delete", "rule"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("name={FIREWALL_RULE_NAME}")])
        .collect()
}

/// Pure: whether `netsh ... show rule name=X` output lists the rule. The labels are localized,
/// the rule name is not, so only the name is looked for, as a whole field value.
pub fn rule_listed(show_output: &str) -> bool {
    show_output.lines().any(|line| {
        line.split_once(':')
            .is_some_and(|(_, value)| value.trim() == FIREWALL_RULE_NAME)
    })
}

/// `dtcprobe agent install`: prints each step done on stdout; returns the exit code.
pub fn install_main(input: &InstallInput) -> u8 {
    let result = std::env::current_exe()
        .map_err(InstallError::OwnPath)
        .and_then(|exe| plan_install(input, exe))
        .and_then(|plan| platform::install(&plan));
    finish("install", result)
}

/// `dtcprobe agent uninstall`.
pub fn uninstall_main(input: &UninstallInput) -> u8 {
    finish("uninstall", platform::uninstall(input))
}

fn finish(what: &str, result: Result<(), InstallError>) -> u8 {
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("dtcprobe agent {what}: {e}");
            e.exit_code()
        }
    }
}

#[cfg(not(windows))]
mod platform {
    use super::{InstallError, InstallPlan, UninstallInput};

    pub fn install(_plan: &InstallPlan) -> Result<(), InstallError> {
        Err(InstallError::NotWindows)
    }

    pub fn uninstall(_input: &UninstallInput) -> Result<(), InstallError> {
        Err(InstallError::NotWindows)
    }
}

#[cfg(windows)]
mod platform {
    //! The SCM calls and netsh runs. Only a Windows host confirms them fully: wine's SCM registers,
    //! starts, stops and deletes services, but its netsh is a stub.

    use std::ffi::OsString;
    use std::os::windows::process::CommandExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use windows_service::service::{
        ServiceAccess, ServiceErrorControl, ServiceExitCode, ServiceInfo, ServiceStartType,
        ServiceState, ServiceType,
    };
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

    use super::*;

    const DISPLAY_NAME: &str = "dtcprobe agent";
    const DESCRIPTION: &str = "dtcprobe agent: answers dtcprobe peer runs from the other zone \
(callback and reverse checks for SQL Server and MSDTC paths)";
    const ERROR_ACCESS_DENIED: i32 = 5;
    const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
    const ERROR_SERVICE_EXISTS: i32 = 1073;
    /// How long a start or stop may take before install/uninstall gives up waiting.
    const STATE_WAIT: Duration = Duration::from_secs(20);

    /// windows-service's errors print as "IO error in winapi call"; the OS error is what helps.
    fn describe(e: &windows_service::Error) -> String {
        match e {
            windows_service::Error::Winapi(io) => match io.raw_os_error() {
                Some(ERROR_ACCESS_DENIED) => {
                    format!("{io}: run it from an elevated prompt (Run as administrator)")
                }
                _ => io.to_string(),
            },
            other => other.to_string(),
        }
    }

    fn os_error(e: &windows_service::Error) -> Option<i32> {
        match e {
            windows_service::Error::Winapi(io) => io.raw_os_error(),
            _ => None,
        }
    }

    fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, InstallError> {
        ServiceManager::local_computer(None::<&str>, access)
            .map_err(|e| InstallError::Service(describe(&e)))
    }

    fn netsh(args: &[String]) -> Result<std::process::Output, InstallError> {
        let mut cmd = Command::new("netsh");
        // Passed verbatim: `program="C:\Program Files\..."` is netsh's own quoting.
        for arg in args {
            cmd.raw_arg(arg);
        }
        cmd.output()
            .map_err(|e| InstallError::Firewall(format!("cannot run netsh: {e}")))
    }

    fn rule_is_listed() -> Result<bool, InstallError> {
        let out = netsh(&netsh_show_rule())?;
        Ok(out.status.success() && rule_listed(&String::from_utf8_lossy(&out.stdout)))
    }

    fn add_firewall_rule(plan: &InstallPlan) -> Result<(), InstallError> {
        let args = netsh_add_rule(plan.port, &plan.exe);
        let out = netsh(&args)?;
        if !out.status.success() {
            return Err(InstallError::Firewall(format!(
                "`netsh {}` failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if !rule_is_listed()? {
            return Err(InstallError::Firewall(format!(
                "`netsh {}` reported success but `netsh {}` does not list the rule (is this \
                 netsh a stub, as under wine?); pass --no-firewall-rule and add the rule by hand",
                args.join(" "),
                netsh_show_rule().join(" ")
            )));
        }
        Ok(())
    }

    fn wait_for(
        service: &windows_service::service::Service,
        done: impl Fn(ServiceState) -> bool,
    ) -> Result<windows_service::service::ServiceStatus, InstallError> {
        let started = Instant::now();
        loop {
            let status = service
                .query_status()
                .map_err(|e| InstallError::Service(describe(&e)))?;
            if done(status.current_state) || started.elapsed() > STATE_WAIT {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn install(plan: &InstallPlan) -> Result<(), InstallError> {
        let manager =
            manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let info = ServiceInfo {
            name: OsString::from(SERVICE_NAME),
            display_name: OsString::from(DISPLAY_NAME),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: plan.exe.clone(),
            launch_arguments: plan.service_args.clone(),
            dependencies: vec![],
            account_name: None,
            account_password: None,
        };
        let access = ServiceAccess::QUERY_STATUS
            | ServiceAccess::START
            | ServiceAccess::STOP
            | ServiceAccess::DELETE
            | ServiceAccess::CHANGE_CONFIG;
        let service = manager.create_service(&info, access).map_err(|e| {
            InstallError::Service(if os_error(&e) == Some(ERROR_SERVICE_EXISTS) {
                format!(
                    "a service named {SERVICE_NAME} is already installed: run `dtcprobe agent \
                     uninstall` first"
                )
            } else {
                describe(&e)
            })
        })?;
        let _ = service.set_description(DESCRIPTION);
        let args: Vec<String> = plan
            .service_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        println!(
            "service {SERVICE_NAME} registered (auto start, LocalSystem): {} {}",
            plan.exe.display(),
            args.join(" ")
        );
        // All or nothing: undo the registration when a later step fails.
        let rollback = |e: InstallError| {
            let _ = service.stop();
            let _ = wait_for(&service, |s| s == ServiceState::Stopped);
            match service.delete() {
                Ok(()) => eprintln!("dtcprobe agent install: service {SERVICE_NAME} removed again"),
                Err(d) => eprintln!(
                    "dtcprobe agent install: could not remove service {SERVICE_NAME} again: {}",
                    describe(&d)
                ),
            }
            e
        };
        if plan.firewall_rule {
            add_firewall_rule(plan).map_err(rollback)?;
            println!(
                "firewall rule {FIREWALL_RULE_NAME} added: inbound TCP {} allowed for {}",
                plan.port,
                plan.exe.display()
            );
        } else {
            println!(
                "no firewall rule added (--no-firewall-rule): inbound TCP {} must be allowed",
                plan.port
            );
        }
        if plan.start {
            let no_args: [&str; 0] = [];
            service.start(&no_args).map_err(|e| {
                InstallError::Service(format!("registered, but start failed: {}", describe(&e)))
            })?;
            let status = wait_for(&service, |s| {
                matches!(s, ServiceState::Running | ServiceState::Stopped)
            })?;
            if status.current_state != ServiceState::Running {
                let code = match status.exit_code {
                    ServiceExitCode::Win32(c) => c,
                    ServiceExitCode::ServiceSpecific(c) => c,
                };
                return Err(InstallError::Service(format!(
                    "registered, but it is {:?} (exit code {code}); run the same command without \
                     --service from a console to see why",
                    status.current_state
                )));
            }
            println!("service {SERVICE_NAME} started");
        }
        Ok(())
    }

    pub fn uninstall(input: &UninstallInput) -> Result<(), InstallError> {
        let manager = manager(ServiceManagerAccess::CONNECT)?;
        let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
        match manager.open_service(SERVICE_NAME, access) {
            Ok(service) => {
                let status = service
                    .query_status()
                    .map_err(|e| InstallError::Service(describe(&e)))?;
                if status.current_state != ServiceState::Stopped {
                    service
                        .stop()
                        .map_err(|e| InstallError::Service(format!("stop: {}", describe(&e))))?;
                    let status = wait_for(&service, |s| s == ServiceState::Stopped)?;
                    if status.current_state != ServiceState::Stopped {
                        return Err(InstallError::Service(format!(
                            "{SERVICE_NAME} did not stop within {STATE_WAIT:?}"
                        )));
                    }
                    println!("service {SERVICE_NAME} stopped");
                }
                service
                    .delete()
                    .map_err(|e| InstallError::Service(format!("delete: {}", describe(&e))))?;
                println!("service {SERVICE_NAME} removed");
            }
            Err(e) if os_error(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
                println!("service {SERVICE_NAME} is not installed");
            }
            Err(e) => return Err(InstallError::Service(describe(&e))),
        }
        if input.firewall_rule {
            // A missing rule makes `delete` fail; what matters is that none is listed after.
            let _ = netsh(&netsh_delete_rule())?;
            if rule_is_listed()? {
                return Err(InstallError::Firewall(format!(
                    "`netsh {}` left the rule in place",
                    netsh_delete_rule().join(" ")
                )));
            }
            println!("firewall rule {FIREWALL_RULE_NAME}: none listed any more");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "e836a7b090f2f3dff83565527c01591845fbfaf4bd9500a3a7805d6ebb33966a";

    /// The agent refuses a key file others can read: test keys are written 0600 on Unix and with
    /// an owner-only ACL on Windows.
    fn owner_only(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        #[cfg(windows)]
        crate::agent::key_acl::restrict_to_owner(path).unwrap();
    }

    fn input(dir: &Path, listen: Option<&str>) -> InstallInput {
        let key = dir.join("agent.key");
        std::fs::write(&key, KEY).unwrap();
        owner_only(&key);
        InstallInput {
            listen: listen.map(String::from),
            key_file: key,
            config: None,
            metrics_listen: None,
            firewall_rule: true,
            start: true,
        }
    }

    #[test]
    fn the_service_command_line_is_resolved_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "allow = [\"sql01:1433\"]\n").unwrap();
        let mut i = input(dir.path(), Some("0.0.0.0:7135"));
        i.config = Some(config.clone());
        i.metrics_listen = Some("127.0.0.1:9716".into());
        let plan = plan_install(&i, PathBuf::from("dtcprobe.exe")).unwrap();
        assert_eq!(plan.port, 7135);
        let args: Vec<String> = plan
            .service_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let key = i.key_file.display().to_string();
        let config = config.display().to_string();
        assert_eq!(
            args,
            [
                "agent",
                "--service",
                "--listen",
                "0.0.0.0:7135",
                "--key-file",
                &key,
                "-c",
                &config,
                "--metrics-listen",
                "127.0.0.1:9716"
            ]
        );
        assert!(Path::new(&args[5]).is_absolute());
    }

    #[test]
    fn the_listen_address_may_come_from_the_config_and_must_have_a_port() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "listen = \"[::]:7136\"\n").unwrap();
        let mut i = input(dir.path(), None);
        assert!(matches!(
            plan_install(&i, "x".into()),
            Err(InstallError::NoListen)
        ));
        i.config = Some(config);
        assert_eq!(plan_install(&i, "x".into()).unwrap().port, 7136);
        for bad in ["sql01:7135", "0.0.0.0", "0.0.0.0:0"] {
            i.listen = Some(bad.into());
            let e = plan_install(&i, "x".into()).unwrap_err();
            assert!(matches!(e, InstallError::BadListen(_)), "{bad}: {e}");
            assert_eq!(e.exit_code(), exit::USAGE);
        }
    }

    #[test]
    fn a_bad_key_or_config_stops_the_install_before_anything_is_registered() {
        let dir = tempfile::tempdir().unwrap();
        let i = input(dir.path(), Some("0.0.0.0:7135"));
        std::fs::write(&i.key_file, "short").unwrap();
        owner_only(&i.key_file);
        let e = plan_install(&i, "x".into()).unwrap_err();
        assert_eq!(e.exit_code(), exit::CONFIG, "{e}");
        let mut i = input(dir.path(), Some("0.0.0.0:7135"));
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, "lisen = \"x\"\n").unwrap();
        i.config = Some(config);
        let e = plan_install(&i, "x".into()).unwrap_err();
        assert_eq!(e.exit_code(), exit::CONFIG, "{e}");
        assert!(e.to_string().contains("bad.toml:1"), "{e}");
    }

    #[test]
    fn netsh_commands() {
        let exe = Path::new(r"C:\Program Files\dtcprobe\dtcprobe.exe");
        assert_eq!(
            netsh_add_rule(7135, exe).join(" "),
            "advfirewall firewall add rule name=dtcprobe-agent dir=in action=allow protocol=TCP \
             localport=7135 program=\"C:\\Program Files\\dtcprobe\\dtcprobe.exe\" enable=yes \
             profile=any"
        );
        assert_eq!(
            netsh_delete_rule().join(" "),
            "advfirewall firewall delete rule name=dtcprobe-agent"
        );
        assert_eq!(
            netsh_show_rule().join(" "),
            "advfirewall firewall show rule name=dtcprobe-agent"
        );
    }

    #[test]
    fn a_rule_is_listed_only_by_its_exact_name() {
        let shown = "\r\nRule Name:                            dtcprobe-agent\r\n\
                     ----------------------------------------------------------------------\r\n\
                     Enabled:                              Yes\r\nLocalPort:    7135\r\nOk.\r\n";
        assert!(rule_listed(shown));
        // German netsh: the label is translated, the name is not.
        assert!(rule_listed("Regelname:    dtcprobe-agent\n"));
        assert!(!rule_listed(""));
        assert!(!rule_listed("No rules match the specified criteria.\n"));
        assert!(!rule_listed("Rule Name:   dtcprobe-agent-old\n"));
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_install_is_a_usage_error() {
        let e = platform::install(&InstallPlan {
            exe: "x".into(),
            service_args: vec![],
            port: 1,
            firewall_rule: false,
            start: false,
        })
        .unwrap_err();
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(e.to_string().contains("systemd"), "{e}");
    }
}
