//! The integration tests, as one test binary (like ripgrep's tests/tests.rs): one link instead of
//! one per file, and one process in which every test shares `support`. Each file below stays a
//! module of its own; what the tests share lives in `support/`.
//!
//! Because the tests now run as threads of one process, anything a test creates on the machine
//! must be unique per test, not per process: namespace names come from
//! `support::netns::unique_name` (pid + a process-wide counter), listeners bind port 0 or an
//! address derived from that counter, and no test changes this process's environment or
//! working directory (children get their own `env`).

mod support;

mod agent_attacks;
mod agent_channel;
mod agent_cli;
mod agent_far_side;
mod agent_far_side_netns;
mod agent_flood;
mod agent_identity;
mod agent_metrics;
mod agent_netns;
mod agent_relay_netns;
mod agent_server;
mod captures;
mod cert_report;
mod cli;
mod dissector;
mod epm_peer;
mod epm_samba;
mod export_baseline;
mod export_formats;
mod export_progress;
#[cfg(feature = "kerberos")]
mod kerberos_samba;
mod matrix;
#[cfg(feature = "kerberos")]
mod matrix_kerberos;
mod module_cycles;
mod ms_drivers;
mod msdtc_config;
mod mssql_browser;
mod mssql_enlist;
mod mssql_freetds;
mod mssql_login;
mod mssql_real_server;
mod mssql_replay;
mod netns_dns;
mod netns_dtc_name;
mod netns_idle;
mod netns_path;
mod netns_reset;
mod netns_tcp;
mod peer_cid;
mod peer_interrupt;
mod perf_scheduling;
mod postgres_real;
mod prometheus_matrix;
mod prometheus_real;
mod report_schema;
mod url_secrets;
mod ux;
mod verdict;
mod watch_metrics;
mod windows_wine;
