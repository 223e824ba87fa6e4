//! One module per hop kind. Each exposes an async function that performs the hop's I/O and
//! returns a [`crate::chain::HopOutput`]; the decisions (what an error means) live in pure
//! functions beside it or in [`crate::classify`].

pub mod epm;
pub mod mssql;
pub mod postgres;
pub mod resolve;
pub mod tcp;
