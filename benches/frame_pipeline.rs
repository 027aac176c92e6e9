//! Walk output → aggregation model → frame JSON, for a realistic busy frame: 300 syscall keys
//! × 33 lhist buckets, as bpftrace prints it for the syscall-latency preset. Prints the time
//! per frame (criterion) and the bytes per frame on the wire, JSON and compact (protocol v1.1),
//! and the time to encode the frame each way.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use heat_actix::aggregation::Snapshot;
use heat_actix::consumer::bpftrace::output::{decode_map, Event};
use heat_actix::consumer::bpftrace::program::aggregation_maps;
use heat_actix::presets::{self, KeyNames};
use heat_actix::session::compact::CompactEncoder;
use heat_actix::session::protocol::{encode_frame, FrameHeader};

/// Keys in the frame: about every syscall a busy machine makes.
const KEYS: i64 = 300;
/// Buckets per key: the preset's 32 linear buckets plus the open top one.
const BUCKETS: i64 = 33;

/// One map line as bpftrace prints it, every bucket non-empty.
fn bpftrace_line() -> String {
    let mut map = serde_json::Map::new();
    for key in 0..KEYS {
        let mut buckets: Vec<serde_json::Value> = (0..BUCKETS - 1)
            .map(|i| serde_json::json!({"min": i * 2, "max": i * 2 + 1, "count": 1 + (key * 7 + i * 13) % 5000}))
            .collect();
        buckets.push(serde_json::json!({"min": 64, "count": 3 + key % 11}));
        map.insert(key.to_string(), serde_json::Value::Array(buckets));
    }
    // `type` first, as bpftrace prints it (a json! object would sort it after `data`).
    format!(
        r#"{{"type": "hist", "data": {{"@latency_us": {}}}}}"#,
        serde_json::Value::Object(map)
    )
}

/// The frame header of the reference frame.
const HEADER: FrameHeader = FrameHeader {
    seq: 1,
    ts_ms: 1_763_788_800_000,
    interval_ms: 1000,
    dropped: 0,
    last: false,
    cost: None,
};

/// The walk's part of the path: bpftrace's map line → the aggregation model.
fn snapshot(line: &str, spec: &heat_actix::consumer::bpftrace::program::MapSpec) -> Snapshot {
    // As the output reader reads each line.
    let Event::Map { value, .. } = serde_json::from_str::<Event>(line).unwrap() else {
        panic!("a map line")
    };
    let mut snapshot = Snapshot {
        aggregations: vec![decode_map(spec, &value).unwrap()],
        output: vec![],
        ..Default::default()
    };
    KeyNames::Syscall.apply(&mut snapshot);
    snapshot
}

/// The whole path one walk takes on the consumer thread.
fn pipeline(line: &str, spec: &heat_actix::consumer::bpftrace::program::MapSpec) -> String {
    encode_frame(&HEADER, &snapshot(line, spec))
}

fn bench(c: &mut Criterion) {
    let preset = presets::find("syscall-latency").unwrap();
    let spec = aggregation_maps(preset.script).remove(0);
    let line = bpftrace_line();
    let frame = pipeline(&line, &spec);
    println!(
        "frame: {KEYS} keys x {BUCKETS} buckets; bpftrace output {} bytes -> frame {} bytes on the wire",
        line.len(),
        frame.len()
    );
    let snapshot = snapshot(&line, &spec);
    let infos = [spec.info.clone()];
    let mut encoder = CompactEncoder::new(&infos);
    let first = encoder.frame(&HEADER, &snapshot);
    let next = encoder.frame(&HEADER, &snapshot);
    let percent = |n: usize| 100.0 * n as f64 / frame.len() as f64;
    println!(
        "compact: {} bytes with the {KEYS} key definitions ({:.1}% of JSON), {} bytes once the \
         keys are known ({:.1}%); dictionary for a late joiner {} bytes",
        first.len(),
        percent(first.len()),
        next.len(),
        percent(next.len()),
        encoder.dictionary().len()
    );
    let mut group = c.benchmark_group("frame_pipeline");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("bpftrace_json_to_frame_300x33", |b| {
        b.iter(|| pipeline(black_box(&line), &spec))
    });
    group.finish();

    // Encoding alone, from the model: what a shared program pays once per tick.
    let mut group = c.benchmark_group("frame_encode");
    group.bench_function("json_300x33", |b| {
        b.iter(|| encode_frame(&HEADER, black_box(&snapshot)))
    });
    group.bench_function("compact_300x33_keys_known", |b| {
        b.iter(|| encoder.frame(&HEADER, black_box(&snapshot)))
    });
    group.bench_function("compact_300x33_first_frame", |b| {
        b.iter(|| CompactEncoder::new(&infos).frame(&HEADER, black_box(&snapshot)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
