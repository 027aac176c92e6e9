//! The bpftrace JSON decoder against recorded output: bpftrace 0.17 (Debian 12) and the layouts
//! of current releases. Both fixtures hold the same data, so both must decode the same.

use std::io::BufReader;

use heat_actix::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Value};
use heat_actix::consumer::bpftrace::output::{decode_map, events, Event};
use heat_actix::consumer::bpftrace::program::aggregation_maps;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bpftrace");

fn decode(file: &str) -> (Vec<Aggregation>, Vec<Event>) {
    let script = std::fs::read_to_string(format!("{FIXTURES}/kinds.bt")).unwrap();
    let specs = aggregation_maps(&script);
    let output = std::fs::File::open(format!("{FIXTURES}/{file}")).unwrap();
    let mut aggregations = Vec::new();
    let mut other = Vec::new();
    for event in events(BufReader::new(output)) {
        match event {
            Event::Map { name, value } => match specs.iter().find(|s| s.info.name == name) {
                Some(spec) => aggregations.push(decode_map(spec, &value).expect("decodes")),
                None => assert_eq!(name, "@state", "only the state map is not an aggregation"),
            },
            e => other.push(e),
        }
    }
    (aggregations, other)
}

fn find<'a>(aggs: &'a [Aggregation], name: &str) -> &'a Aggregation {
    aggs.iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("{name} decoded"))
}

fn scalar(aggs: &[Aggregation], name: &str) -> Value {
    let agg = find(aggs, name);
    assert_eq!(agg.series.len(), 1, "{name}");
    agg.series[0].value.clone()
}

fn b(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
    Bucket { lo, hi, count }
}

fn check(file: &str) {
    let (aggs, other) = decode(file);
    assert_eq!(aggs.len(), 13, "{file}: every aggregation of kinds.bt");
    assert!(
        other
            .iter()
            .any(|e| matches!(e, Event::Attached { probes: 1 })),
        "{file}: {other:?}"
    );

    assert_eq!(scalar(&aggs, "@c"), Value::Scalar(2));
    assert_eq!(scalar(&aggs, "@s"), Value::Scalar(3));
    assert_eq!(scalar(&aggs, "@a"), Value::Scalar(15));
    assert_eq!(scalar(&aggs, "@mn"), Value::Scalar(3));
    assert_eq!(scalar(&aggs, "@mx"), Value::Scalar(7));
    assert_eq!(
        scalar(&aggs, "@st"),
        Value::Stats {
            count: 2,
            total: 12,
            average: 6
        }
    );
    assert_eq!(
        find(&aggs, "@st").series[0].key,
        vec![],
        "{file}: unkeyed stats has an empty key"
    );

    assert_eq!(
        scalar(&aggs, "@h"),
        Value::Buckets(vec![
            b(None, Some(-1), 1),
            b(Some(0), Some(0), 1),
            b(Some(1), Some(1), 1),
            b(Some(512), Some(1023), 1)
        ]),
        "{file}: log2 buckets, zeros dropped, negative bucket open below"
    );
    assert_eq!(
        scalar(&aggs, "@l"),
        Value::Buckets(vec![
            b(None, Some(-1), 1),
            b(Some(2), Some(3), 1),
            b(Some(10), None, 1)
        ]),
        "{file}: linear buckets open at both ends"
    );

    let kh = find(&aggs, "@kh");
    assert_eq!(kh.kind, AggKind::Hist);
    let by_key = |agg: &Aggregation, key: Vec<KeyPart>| {
        agg.series
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{key:?}"))
    };
    assert_eq!(
        by_key(kh, vec![KeyPart::Str("read".into())]),
        Value::Buckets(vec![b(Some(4), Some(7), 1)])
    );
    assert_eq!(
        by_key(kh, vec![KeyPart::Str("write".into())]),
        Value::Buckets(vec![b(Some(64), Some(127), 2)])
    );
    let kl = find(&aggs, "@kl");
    assert_eq!(
        by_key(kl, vec![KeyPart::Str("read".into())]),
        Value::Buckets(vec![b(Some(4), Some(5), 1)])
    );

    let kc = find(&aggs, "@kc");
    assert_eq!(
        by_key(kc, vec![KeyPart::Str("bash".into()), KeyPart::Int(257)]),
        Value::Scalar(1)
    );
    assert_eq!(
        by_key(kc, vec![KeyPart::Str("sshd".into()), KeyPart::Int(3)]),
        Value::Scalar(2)
    );
    let ks = find(&aggs, "@ks");
    assert_eq!(
        by_key(ks, vec![KeyPart::Int(1)]),
        Value::Stats {
            count: 2,
            total: 10,
            average: 5
        }
    );
    let ka = find(&aggs, "@ka");
    assert_eq!(by_key(ka, vec![KeyPart::Str("x".into())]), Value::Scalar(9));
    // A keyed map emptied by delete() prints nothing at all.
    assert!(aggs.iter().all(|a| a.name != "@empty"), "{file}");
}

#[test]
fn bpftrace_0_17_output_decodes() {
    check("0.17.ndjson");
}

#[test]
fn current_bpftrace_output_decodes() {
    check("current.ndjson");
    let (_, other) = decode("current.ndjson");
    assert!(
        other.contains(&Event::WalkDone(3)),
        "the walk marker is recognised: {other:?}"
    );
}

#[test]
fn text_that_is_not_json_is_kept_as_text() {
    let input = "not json at all\n{\"type\": \"map\", \"data\": {\"@c\": 1}}\n";
    let got: Vec<Event> = events(BufReader::new(input.as_bytes())).collect();
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[0], Event::Text(t) if t.contains("not json")));
    assert!(matches!(&got[1], Event::Map { name, .. } if name == "@c"));
}
