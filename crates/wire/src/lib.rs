//! dtcprobe's wire codecs: everything that turns bytes from the network into values (and back),
//! with no I/O, no async runtime and no clock. dtcprobe's probes, its test peers and the fuzz
//! targets all use these same functions, so what the fuzzers hold to is what the tool runs and
//! what the tests speak.
//!
//! - [`dcerpc`]: DCE/RPC PDUs, NDR and endpoint-mapper towers (MSDTC's RPC path).
//! - [`dtco`]: MSDTC's whereabouts (MS-DTCO SWhereabouts), the answer to TM_GET_DTC_ADDRESS.
//! - [`tds`]: the TDS bits dtcprobe reads from a SQL Server (packet headers, PRELOGIN, LOGINACK)
//!   and the ones its test peer writes (ENVCHANGE, INFO/ERROR, DONE).
//! - [`ssrp`]: the SQL Server Browser protocol (UDP 1434).
//! - [`agent`]: the agent protocol's frames and message types.
//! - [`kerberos`]: the Kerberos AS-REQ probe, the KRB-ERROR answer, a ticket's encryption type.
//! - [`ldap`]: an LDAP SASL bind and an equality search (an SPN on two accounts).
//! - [`http`]: the HTTP/1.1 request and answer of a CRL download or an OCSP request.
//! - [`ocsp`]: an OCSP request for one certificate and the response's status (hop `revocation`).
//!
//! Every decoder takes untrusted input and returns an error (or `None`) instead of panicking, and
//! none uses `unsafe` (forbidden below): a codec bug stays a wrong value, never memory corruption.

#![forbid(unsafe_code)]

pub mod agent;
pub mod dcerpc;
mod der;
pub mod dtco;
pub mod http;
pub mod kerberos;
pub mod ldap;
pub mod ocsp;
pub mod ssrp;
pub mod tds;
