//! The Windows service's name, in a file of its own: the service's installer (install.rs) and
//! its dispatcher (winsvc.rs) both name it, and the dispatcher is reached from the command
//! (cmd.rs) that the installer reads its inputs from; keeping the name here keeps that a line,
//! not a circle.

/// The service name (the SCM key under HKLM\System\CurrentControlSet\Services).
pub const SERVICE_NAME: &str = "dtcprobe-agent";
