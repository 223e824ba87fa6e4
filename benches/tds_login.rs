//! Benchmark placeholder while the TDS test peer is written (filled in below by the mssql work).
fn main() {}
