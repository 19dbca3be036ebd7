//! Line protocol parsing throughput: lines per second on one core.
//!
//! The body is 10,000 lines as a field gateway sends them: one meter reading per line,
//! three tags, five fields of mixed types, nanosecond timestamps.
//!
//! Run with `cargo bench -p benches --bench line_protocol` (release profile).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::{Precision, parse_line_protocol};

const LINES: usize = 10_000;

/// Realistic meter rows: 50 sites with 4 meters each, readings one second apart.
fn meter_body() -> String {
    let mut body = String::with_capacity(LINES * 160);
    let start_ns: i64 = 1_714_564_800_000_000_000;
    for i in 0..LINES {
        let site = i % 50;
        let device = i % 200;
        let phase = ["L1", "L2", "L3"][i % 3];
        let power = 1500.0 + (i % 97) as f64 * 3.25;
        let energy = 12_345_678 + i as i64 * 7;
        let voltage = 229.5 + (i % 11) as f64 * 0.1;
        let current = power / voltage;
        let frequency = 49.98 + (i % 5) as f64 * 0.01;
        let time = start_ns + (i as i64 / 200) * 1_000_000_000;
        writeln!(
            body,
            "meter,site=site-{site:03},device=meter-{device:04},phase={phase} \
             power_w={power:.1},energy_wh={energy}i,voltage_v={voltage:.1},\
             current_a={current:.3},frequency_hz={frequency:.2} {time}"
        )
        .expect("writing to a String cannot fail");
    }
    body
}

fn bench_line_protocol(c: &mut Criterion) {
    let body = meter_body();
    // Guard against benchmarking the error path.
    let (lines, errors) = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 0);
    assert_eq!((lines.len(), errors.len()), (LINES, 0), "{errors:?}");

    let mut group = c.benchmark_group("line_protocol");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("meter_10k_lines_5_fields", |b| {
        b.iter(|| parse_line_protocol(black_box(body.as_bytes()), Precision::Nanoseconds, 0))
    });
    group.finish();
}

criterion_group!(benches, bench_line_protocol);
criterion_main!(benches);
