//! dtcprobe: zone-to-zone probing of the paths SQL Server and MSDTC need.
//!
//! Layout: pure logic (config and target parsing, classification, report building) is separate
//! from I/O (`hops`, `resolver`, `runner`); `app` is the edge that wires the CLI to them.

pub mod agent;
pub mod app;
pub mod baseline;
pub mod chain;
pub mod check_table;
pub mod classify;
pub mod cli;
pub mod config;
pub use dtcprobe_wire::dcerpc;
pub mod exit;
pub mod fdlimit;
pub mod hop_data;
pub mod hops;
pub mod hostport;
pub mod matrix;
pub mod matrix_report;
pub mod metrics_server;
pub mod model;
pub mod observed_stream;
pub mod plan;
pub mod platform_hints;
pub mod progress;
pub mod prometheus_config;
pub mod prometheus_matrix;
pub mod report;
pub mod resolver;
pub mod runner;
pub mod secret;
pub mod signals;
pub mod target;
pub mod tls;
pub mod verdict;
pub mod watch;
