//! The results file (`results.json`), the table printed at the end, and the comparison with a saved
//! baseline, one job per file:
//!
//! - `schema.rs`: the file's layout ([`Results`], [`Record`], [`Metric`], [`Limit`]);
//! - `analysis.rs`: from measured cells to records: medians, ratios to the socketpair baseline
//!   over interleaved pairs (`vs_baseline`) and to the machine's limit (`vs_limit`), collapses;
//! - `table.rs`: the header, the table and the notes on collapsed cells;
//! - `compare.rs`: the comparison with a saved baseline.

mod analysis;
mod compare;
#[cfg(test)]
mod fixtures;
mod schema;
mod table;

pub use compare::{Change, change_table, compare};
pub use schema::{Limit, Machine, Metric, Probe, Profile, Record, Results, SCHEMA};
