//! The parts of MS-TDS that dtcprobe reads from a SQL Server and that its test peer writes: the
//! 8-byte packet header, the PRELOGIN option list, and the login response tokens (LOGINACK,
//! ENVCHANGE, INFO/ERROR, DONE), and RPC requests (`rpc`: what Microsoft's drivers send for
//! parameterised statements, decoded by the test peer). Full TDS on the client side (LOGIN7,
//! result sets) is tiberius's job; this is only what the driver does not expose (the server's
//! PRELOGIN answer, the TDS version it acknowledged) plus what a scripted server needs.
//!
//! Style follows trippy-packet: builders return bytes, parsers take `&[u8]` and return `None` or
//! an error rather than panic or read past their input.

pub mod observe;
pub mod packet;
pub mod prelogin;
pub mod rpc;
pub mod strings;
pub mod token;
// Transaction manager requests, LOGIN7 and whole replies: the `tx_enlist` hop's own session.
pub mod login7;
pub mod reply;
pub mod tm;

pub use observe::{analyze, Observed};
pub use packet::{packetize, PacketHeader};
pub use prelogin::{encode_prelogin, parse_prelogin, parse_prelogin_options, PreloginInfo};
pub use token::{find_login_ack, LoginAck, ServerMessage};

pub use strings::{b_varchar, from_utf16le, us_varchar, utf16le};
