//! Criterion benches of sp's in-process hot paths; the benches live in `benches/`, this library is
//! empty. Cross-process throughput and latency come from the `sp-bench` binary instead.
