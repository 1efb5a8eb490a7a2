//! From measured cells to records: each figure's median, minimum, maximum and repetitions; its
//! ratio to the socketpair baseline over interleaved pairs (`vs_baseline`); its ratio to the
//! machine's limit (`vs_limit`, [`Limit`]); and whether it collapsed.

use std::collections::BTreeMap;

use super::schema::{Limit, Machine, Metric, Probe, Profile, Record, Results, SCHEMA};
use crate::plan::{Cell, Config};
use crate::spec::{Mode, Sample};
use crate::stats::{self, Summary};
use crate::transport::{BASELINE, Transport};

impl Results {
    /// Builds the records from the measured cells.
    pub fn build(
        config: &Config,
        date: String,
        machine: Machine,
        probe: Probe,
        cells: &[Cell],
    ) -> Self {
        let mut records = Vec::new();
        let mut notes = Vec::new();
        // The samples of each cell's partner (the baseline, or a scenario's partner), pooled over
        // every cell of the same partner, size and mode.
        let mut baseline: BTreeMap<(Transport, usize, bool), Vec<&Sample>> = BTreeMap::new();
        // The probes taken before the latency cells of each transport and size.
        let mut probes: BTreeMap<(&str, u64), Vec<f64>> = BTreeMap::new();
        for cell in cells {
            for err in &cell.errors {
                notes.push(format!(
                    "{} {} B {:?}: {err}",
                    cell.transport.name(),
                    cell.size,
                    cell.mode
                ));
            }
            if !cell.redone.is_empty() {
                let (lo, hi) = cell
                    .redone
                    .iter()
                    .flatten()
                    .fold((f64::INFINITY, 0.0f64), |(lo, hi), &p| {
                        (lo.min(p), hi.max(p))
                    });
                notes.push(format!(
                    "{} {} B {:?}: {} repetition(s) measured again, the probe moving between \
                     {lo:.0} and {hi:.0} ns within them",
                    cell.transport.name(),
                    cell.size,
                    cell.mode,
                    cell.redone.len()
                ));
            }
            let key = (
                cell.transport.partner(),
                cell.size,
                cell.mode == Mode::Latency,
            );
            baseline
                .entry(key)
                .or_default()
                .extend(cell.pairs.iter().map(|(b, _)| b));
            if cell.mode == Mode::Latency {
                // The probes that bracket each measurement where the cell has them (the first two
                // of a repetition around its baseline, the last two around the transport), else
                // the one taken before the cell.
                let around = |first: bool| -> Vec<f64> {
                    cell.rep_probes
                        .iter()
                        .filter(|p| p.len() >= 2)
                        .flat_map(|p| if first { &p[..2] } else { &p[p.len() - 2..] })
                        .copied()
                        .collect()
                };
                let fallback: Vec<f64> = cell.probe_ns.into_iter().collect();
                let or_cell = |v: Vec<f64>| if v.is_empty() { fallback.clone() } else { v };
                probes
                    .entry((BASELINE.name(), cell.size as u64))
                    .or_default()
                    .extend(or_cell(around(true)));
                if cell.transport != BASELINE {
                    probes
                        .entry((cell.transport.name(), cell.size as u64))
                        .or_default()
                        .extend(or_cell(around(false)));
                }
            }
        }
        for cell in cells {
            if cell.transport.partner() == cell.transport {
                continue;
            }
            for metric in Metric::ALL.into_iter().filter(|m| m.mode() == cell.mode) {
                let values: Vec<f64> = cell
                    .pairs
                    .iter()
                    .filter_map(|(_, t)| metric.of(t))
                    .collect();
                let (num, den): (Vec<f64>, Vec<f64>) = cell
                    .pairs
                    .iter()
                    .filter_map(|(b, t)| Some((metric.of(t)?, metric.of(b)?)))
                    .unzip();
                if let Some(record) = record(cell.transport, cell.size, metric, &values) {
                    records.push(Record {
                        vs_baseline: stats::median_ratio(&num, &den),
                        rep_probes: cell.rep_probes.clone(),
                        redone: cell.redone.len(),
                        ..with_rival(record, cell, metric)
                    });
                }
            }
        }
        for ((partner, size, latency), samples) in &baseline {
            for metric in Metric::ALL {
                if (metric.mode() == Mode::Latency) != *latency {
                    continue;
                }
                let values: Vec<f64> = samples.iter().filter_map(|s| metric.of(s)).collect();
                if let Some(record) = record(*partner, *size, metric, &values) {
                    records.push(Record {
                        vs_baseline: Some(1.0),
                        ..record
                    });
                }
            }
        }
        records.sort_by_key(sort_key);
        let probes: BTreeMap<(&str, u64), f64> = probes
            .into_iter()
            .filter_map(|(key, p)| Some((key, stats::median(&p)?)))
            .collect();
        set_limit_ratios(&mut records, &probes);
        Self {
            schema: SCHEMA,
            date,
            machine,
            probe,
            profile: Profile {
                name: config.profile.clone(),
                reps: config.reps,
                warmup_ms: config.warmup.as_millis() as u64,
                duration_ms: config.duration.as_millis() as u64,
            },
            baseline_transport: BASELINE.name().into(),
            records,
            notes,
        }
    }
}

/// `record` with its ratio to the cell's rival, pair by pair, for the metrics a target compares.
fn with_rival(record: Record, cell: &Cell, metric: Metric) -> Record {
    let Some(rival) = cell.rival() else {
        return record;
    };
    if !matches!(
        metric,
        Metric::Throughput | Metric::MessageRate | Metric::RttP50
    ) {
        return record;
    }
    let ratios: Vec<f64> = cell
        .rivals
        .iter()
        .filter_map(|(r, t)| Some((metric.of(t)?, metric.of(r)?)))
        .filter(|(_, r)| *r > 0.0)
        .map(|(t, r)| t / r)
        .collect();
    if ratios.is_empty() {
        return record;
    }
    Record {
        rival: Some(rival.name().into()),
        vs_rival: stats::median(&ratios),
        rival_ratios: ratios,
        ..record
    }
}

fn record(transport: Transport, size: usize, metric: Metric, values: &[f64]) -> Option<Record> {
    let Summary {
        median,
        min,
        max,
        n,
    } = stats::summarize(values)?;
    let best = if metric.higher_is_better() { max } else { min };
    Some(Record {
        reps: values.to_vec(),
        collapsed: n > 1 && metric.collapsed(median, best),
        transport: transport.name().into(),
        size_bytes: size as u64,
        metric,
        unit: metric.unit().into(),
        median,
        min,
        max,
        n,
        vs_baseline: None,
        vs_limit: None,
        limit: None,
        rival: None,
        vs_rival: None,
        rival_ratios: Vec::new(),
        rep_probes: Vec::new(),
        redone: 0,
    })
}

fn sort_key(r: &Record) -> (u64, usize, usize) {
    let t = Transport::from_name(&r.transport)
        .and_then(|t| Transport::ALL.iter().position(|x| *x == t))
        .unwrap_or(usize::MAX);
    let m = r.metric as usize;
    (r.size_bytes, t, m)
}

/// Sets `vs_limit` and `limit`. Throughput of the sp-shm ring rows: against `ref-ring` of the same
/// size (message rate too; the two ratios are the same at one size): the median of the pairs when
/// ref-ring ran as the cell's rival, else the ratio of medians, none if the run has no ref-ring.
/// Other throughput: against memcpy of the same size. Round trips: against the fastest a round
/// trip could be, the probes taken just before and after the transport's measurements (else the
/// one before the cell): one cache line there and back, in the machine's phase of the moment (its
/// cross-core speed drifts too much for one figure to serve a whole run), plus, when
/// memcpy was measured, writing and reading the message once each way at memcpy speed
/// (`2 × size ÷ memcpy`). Without a probe the pingpong ceiling stands in for it.
fn set_limit_ratios(records: &mut [Record], probes: &BTreeMap<(&str, u64), f64>) {
    let medians = |transport: Transport, metric: Metric| -> BTreeMap<u64, f64> {
        records
            .iter()
            .filter(|r| r.transport == transport.name() && r.metric == metric)
            .map(|r| (r.size_bytes, r.median))
            .collect()
    };
    let memcpy = medians(Transport::Memcpy, Metric::Throughput);
    let ref_ring =
        [Metric::Throughput, Metric::MessageRate].map(|m| medians(Transport::RefRing, m));
    let pingpong = records
        .iter()
        .find(|r| r.transport == Transport::Pingpong.name() && r.metric == Metric::RttP50)
        .map(|r| r.median);
    for r in records.iter_mut() {
        let is_ring = Transport::from_name(&r.transport).is_some_and(Transport::is_ring);
        let limit = match r.metric {
            // Measured in the same repetitions: the paired ratio, not a ratio of medians.
            Metric::Throughput | Metric::MessageRate
                if is_ring && r.rival.as_deref() == Some(Transport::RefRing.name()) =>
            {
                r.vs_limit = r.vs_rival;
                r.limit = Some(Limit::RefRing);
                continue;
            }
            Metric::Throughput if is_ring => {
                ref_ring[0].get(&r.size_bytes).map(|l| (*l, Limit::RefRing))
            }
            Metric::MessageRate if is_ring => {
                ref_ring[1].get(&r.size_bytes).map(|l| (*l, Limit::RefRing))
            }
            Metric::Throughput => memcpy.get(&r.size_bytes).map(|l| (*l, Limit::Memcpy)),
            Metric::RttP50 | Metric::RttP99 | Metric::RttP999 => {
                let hop = match probes.get(&(r.transport.as_str(), r.size_bytes)) {
                    Some(probe) => Some((*probe, Limit::Probe)),
                    None => pingpong.map(|p| (p, Limit::Pingpong)),
                };
                let copies = if r.transport == Transport::Pingpong.name() {
                    0.0
                } else {
                    memcpy
                        .get(&r.size_bytes)
                        .filter(|bw| **bw > 0.0)
                        .map_or(0.0, |bw| 2.0 * r.size_bytes as f64 / bw * 1e9)
                };
                hop.map(|(hop, kind)| (hop + copies, kind))
            }
            _ => None,
        };
        let limit = limit.filter(|(l, _)| *l > 0.0);
        r.vs_limit = limit.map(|(l, _)| r.median / l);
        r.limit = limit.map(|(_, kind)| kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{rec, results, sample};

    /// Results of a quick run of `cells`, with one probe of 50 ns.
    fn build(cells: &[Cell]) -> Results {
        Results::build(
            &Config::quick(),
            "now".into(),
            Machine::detect(),
            Probe::new(vec![50.0]),
            cells,
        )
    }

    #[test]
    fn build_pairs_ratios_and_pools_the_baseline() {
        let tp = |t, n| sample(t, Mode::Throughput, n, 0.0);
        let lat = |t, p50| sample(t, Mode::Latency, 1, p50);
        let cells = vec![
            Cell {
                transport: Transport::Pipe,
                size: 64,
                mode: Mode::Throughput,
                // Ratios 2, 3 and 1: median 2, although the medians are 400 / 200 = 2 too.
                pairs: vec![
                    (tp(BASELINE, 100), tp(Transport::Pipe, 200)),
                    (tp(BASELINE, 200), tp(Transport::Pipe, 600)),
                    (tp(BASELINE, 400), tp(Transport::Pipe, 400)),
                ],
                rivals: Vec::new(),
                errors: vec!["one failed".into()],
                probe_ns: Some(50.0),
                rep_probes: vec![vec![60.0, 62.0, 61.0]; 3],
                // One repetition measured again: the probe halved within it.
                redone: vec![vec![63.0, 29.0, 30.0]],
            },
            Cell {
                transport: Transport::Pipe,
                size: 64,
                mode: Mode::Latency,
                pairs: vec![(lat(BASELINE, 1000.0), lat(Transport::Pipe, 500.0))],
                rivals: Vec::new(),
                errors: vec![],
                probe_ns: Some(100.0),
                rep_probes: Vec::new(),
                redone: Vec::new(),
            },
        ];
        let r = Results::build(
            &Config::quick(),
            "now".into(),
            Machine::detect(),
            Probe::new(vec![50.0, 100.0]),
            &cells,
        );
        let pipe = r.find("pipe", 64, Metric::Throughput).unwrap();
        assert_eq!((pipe.median, pipe.n), (400.0 * 64.0, 3));
        assert_eq!(pipe.vs_baseline, Some(2.0));
        let base = r.find(BASELINE.name(), 64, Metric::Throughput).unwrap();
        assert_eq!((base.median, base.vs_baseline), (200.0 * 64.0, Some(1.0)));
        // CPU per GB: 1 µs for 200 × 64 bytes.
        let cpu = r.find("pipe", 64, Metric::CpuTx).unwrap();
        assert!((cpu.median - 1e-6 / (400.0 * 64.0 / 1e9)).abs() < 1e-9);
        let rtt = r.find("pipe", 64, Metric::RttP50).unwrap();
        assert_eq!(rtt.vs_baseline, Some(0.5));
        // No memcpy in this run: the limit is the cell's probe alone.
        assert_eq!(rtt.vs_limit, Some(5.0));
        // The cell's repetitions and the one redone reach its records and the notes.
        assert_eq!((pipe.redone, pipe.rep_probes.len()), (1, 3));
        assert_eq!((rtt.redone, rtt.rep_probes.len()), (0, 0));
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(
            r.notes[1].contains("1 repetition(s) measured again")
                && r.notes[1].contains("between 29 and 63 ns"),
            "{:?}",
            r.notes
        );
        assert!(r.table().to_string().contains("pipe"));
    }

    /// A round trip is held to the probes around its own measurements, not to the probe before
    /// the cell, which may have caught the machine in another phase.
    #[test]
    fn round_trips_are_held_to_the_probes_of_their_repetitions() {
        let lat = |t, p50| sample(t, Mode::Latency, 1, p50);
        let cell = |rep_probes: Vec<Vec<f64>>| Cell {
            transport: Transport::Pipe,
            size: 64,
            mode: Mode::Latency,
            pairs: vec![(lat(BASELINE, 1000.0), lat(Transport::Pipe, 500.0))],
            rivals: Vec::new(),
            errors: vec![],
            probe_ns: Some(300.0),
            rep_probes,
            redone: Vec::new(),
        };
        // Around the baseline 300 and 300, around the pipe 50 and 50 (a rival ran in between).
        let r = build(&[cell(vec![vec![300.0, 300.0, 50.0, 50.0]])]);
        let rtt = r.find("pipe", 64, Metric::RttP50).unwrap();
        assert_eq!((rtt.vs_limit, rtt.limit), (Some(10.0), Some(Limit::Probe)));
        let base = r.find(BASELINE.name(), 64, Metric::RttP50).unwrap();
        assert_eq!(base.vs_limit, Some(1000.0 / 300.0));
        // Without them, the cell's probe.
        let r = build(&[cell(Vec::new())]);
        let rtt = r.find("pipe", 64, Metric::RttP50).unwrap();
        assert_eq!(rtt.vs_limit, Some(500.0 / 300.0));
    }

    #[test]
    fn limit_ratios_use_memcpy_and_pingpong() {
        let mut records = vec![
            rec("memcpy", Metric::Throughput, 10e9, None),
            rec("pipe", Metric::Throughput, 1e9, None),
            rec("pingpong", Metric::RttP50, 100.0, None),
            rec("pipe", Metric::RttP99, 5000.0, None),
        ];
        let probes = BTreeMap::from([(("pipe", 64), 200.0)]);
        set_limit_ratios(&mut records, &probes);
        assert_eq!(records[1].vs_limit, Some(0.1));
        // The pipe's probe (200 ns) plus 2 × 64 B at 10 GB/s (12.8 ns).
        assert!((records[3].vs_limit.unwrap() - 5000.0 / 212.8).abs() < 1e-9);
        // The pingpong has no probe of its own here: its own median.
        assert_eq!(records[2].vs_limit, Some(1.0));
        assert_eq!(records[1].limit, Some(Limit::Memcpy));
        assert_eq!(records[2].limit, Some(Limit::Pingpong));
        assert_eq!(records[3].limit, Some(Limit::Probe));
    }

    #[test]
    fn a_median_below_half_the_best_repetition_is_flagged_with_every_repetition() {
        let tp = |n_msgs| sample(Transport::SpShmAdaptive, Mode::Throughput, n_msgs, 0.0);
        let lat = |p50| sample(Transport::SpShmAdaptive, Mode::Latency, 1, p50);
        let base = |mode| sample(BASELINE, mode, 100, 1000.0);
        let cells = vec![
            Cell {
                transport: Transport::SpShmAdaptive,
                size: 64,
                mode: Mode::Throughput,
                // 2,350 and 2,400 msg/s against a best of 36,500: collapsed.
                pairs: vec![
                    (base(Mode::Throughput), tp(2_350)),
                    (base(Mode::Throughput), tp(36_500)),
                    (base(Mode::Throughput), tp(2_400)),
                ],
                rivals: Vec::new(),
                errors: vec![],
                probe_ns: None,
                rep_probes: Vec::new(),
                redone: Vec::new(),
            },
            Cell {
                transport: Transport::SpShmAdaptive,
                size: 64,
                mode: Mode::Latency,
                // A median exactly twice the best is not (yet) a collapse.
                pairs: vec![
                    (base(Mode::Latency), lat(100.0)),
                    (base(Mode::Latency), lat(200.0)),
                    (base(Mode::Latency), lat(300.0)),
                ],
                rivals: Vec::new(),
                errors: vec![],
                probe_ns: None,
                rep_probes: Vec::new(),
                redone: Vec::new(),
            },
        ];
        let r = build(&cells);
        let tp = r.find("sp-shm-adaptive", 64, Metric::MessageRate).unwrap();
        assert!(tp.collapsed);
        assert_eq!(tp.reps, [2_350.0, 36_500.0, 2_400.0]);
        assert!(
            r.find("sp-shm-adaptive", 64, Metric::Throughput)
                .unwrap()
                .collapsed
        );
        assert!(
            !r.find("sp-shm-adaptive", 64, Metric::RttP50)
                .unwrap()
                .collapsed
        );
        // Tail percentiles are not checked: p99 = 2 × p50 here, median 400 against best 200.
        assert!(
            !r.find("sp-shm-adaptive", 64, Metric::RttP99)
                .unwrap()
                .collapsed
        );
        assert!(
            !r.find(BASELINE.name(), 64, Metric::Throughput)
                .unwrap()
                .collapsed
        );

        let notes = r.collapse_notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.contains(
                &"sp-shm-adaptive 64 B message_rate: median 2.4 k msg/s, best 36.5 k msg/s; \
                  repetitions 2.4 k msg/s, 36.5 k msg/s, 2.4 k msg/s"
                    .to_owned()
            ),
            "{notes:?}"
        );
        let table = r.table().to_string();
        assert!(
            table.contains("!150.4 kB/s") || table.contains("!0.2 MB/s"),
            "{table}"
        );
        assert!(table.contains("!2.4 k"), "{table}");

        let json = serde_json::to_value(&r).unwrap();
        let flagged: Vec<&serde_json::Value> = json["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rec| rec["collapsed"] == true)
            .collect();
        assert_eq!(flagged.len(), 2);
        assert_eq!(flagged[0]["reps"].as_array().unwrap().len(), 3);
        // Records that did not collapse leave the field out; older files load without either.
        let rtt = json["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rec| {
                rec["metric"] == Metric::RttP50.name() && rec["transport"] == "sp-shm-adaptive"
            })
            .unwrap();
        assert!(rtt.get("collapsed").is_none());
        let mut old = json.clone();
        for rec in old["records"].as_array_mut().unwrap() {
            let rec = rec.as_object_mut().unwrap();
            rec.remove("reps");
            rec.remove("collapsed");
        }
        let old: Results = serde_json::from_value(old).unwrap();
        assert!(
            old.records
                .iter()
                .all(|rec| !rec.collapsed && rec.reps.is_empty())
        );
    }

    #[test]
    fn a_rival_in_the_same_repetitions_gives_the_median_of_pair_ratios() {
        let tp = |t, n| sample(t, Mode::Throughput, n, 0.0);
        let spin = |n| tp(Transport::SpShmSpin, n);
        let cells = vec![Cell {
            transport: Transport::SpShmSpin,
            size: 64,
            mode: Mode::Throughput,
            pairs: [100, 300, 200]
                .map(|n| (tp(BASELINE, 10), spin(n)))
                .to_vec(),
            // Pair ratios 0.5, 2 and 2: median 2, where the ratio of medians is 200 / 150.
            rivals: vec![
                (tp(Transport::RefRing, 200), spin(100)),
                (tp(Transport::RefRing, 150), spin(300)),
                (tp(Transport::RefRing, 100), spin(200)),
            ],
            errors: vec![],
            probe_ns: None,
            rep_probes: Vec::new(),
            redone: Vec::new(),
        }];
        let r = build(&cells);
        let rate = r.find("sp-shm-spin", 64, Metric::MessageRate).unwrap();
        assert_eq!(rate.rival.as_deref(), Some("ref-ring"));
        assert_eq!(rate.rival_ratios, [0.5, 2.0, 2.0]);
        assert_eq!(
            (rate.vs_rival, rate.vs_limit, rate.limit),
            (Some(2.0), Some(2.0), Some(Limit::RefRing))
        );
        // Only the metrics a target compares carry a rival.
        assert!(
            r.find("sp-shm-spin", 64, Metric::CpuTx)
                .unwrap()
                .rival
                .is_none()
        );
        assert_eq!(
            r.rival_notes(),
            ["sp-shm-spin 64 B message_rate: 2.00× ref-ring (pairs 0.50, 2.00, 2.00)"]
        );
    }

    #[test]
    fn ring_rows_are_measured_against_the_ref_ring_of_their_size() {
        let at = |transport: &str, metric: Metric, median: f64, size: u64| Record {
            size_bytes: size,
            ..rec(transport, metric, median, None)
        };
        let mut records = vec![
            at("memcpy", Metric::Throughput, 100e9, 64),
            at("ref-ring", Metric::Throughput, 3.2e9, 64),
            at("ref-ring", Metric::MessageRate, 50e6, 64),
            at("ref-ring", Metric::Throughput, 40e9, 1 << 20),
            at("sp-shm-spin", Metric::Throughput, 1.6e9, 64),
            at("sp-shm-spin", Metric::MessageRate, 25e6, 64),
            at("sp-shm-park", Metric::Throughput, 30e9, 1 << 20),
            // No ref-ring at this size: no limit, rather than memcpy's.
            at("sp-shm-adaptive", Metric::Throughput, 1e9, 1 << 10),
            at("pipe", Metric::Throughput, 1e9, 64),
        ];
        set_limit_ratios(&mut records, &BTreeMap::new());
        let limit = |i: usize| (records[i].vs_limit, records[i].limit);
        assert_eq!(limit(4), (Some(0.5), Some(Limit::RefRing)));
        assert_eq!(limit(5), (Some(0.5), Some(Limit::RefRing)));
        assert_eq!(limit(6), (Some(0.75), Some(Limit::RefRing)));
        assert_eq!(limit(7), (None, None));
        assert_eq!(limit(8), (Some(0.01), Some(Limit::Memcpy)));
        // The ref-ring itself is a throughput row like any other: against memcpy.
        assert_eq!(limit(1), (Some(0.032), Some(Limit::Memcpy)));
        let table = results(records).table().to_string();
        assert!(table.contains("| ref-ring "), "{table}");
    }
}
