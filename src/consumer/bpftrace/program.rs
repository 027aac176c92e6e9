//! Reading a bpftrace script for its aggregations, and adding the walk probe that lets the
//! session's tick (not bpftrace's own timer) decide when each interval ends.
//!
//! bpftrace has no API to walk maps from outside. We append one uprobe on a function of this
//! very binary, [`walk_trigger`]; calling it with this program's cookie makes bpftrace print
//! and clear every aggregation, then print a marker carrying the walk's sequence number. The
//! marker tells the reader where the walk's output ends.

use std::path::Path;

use std::collections::HashMap;

use crate::aggregation::{AggKind, AggregationInfo, KeyPart, Layout, Snapshot, Value};

/// Prefix of the line bpftrace prints when a walk is complete; the walk number follows.
pub const WALK_MARKER: &str = "heat-actix:walk:";

/// An aggregation map found in a script, with what decoding its output needs.
#[derive(Debug, Clone, PartialEq)]
pub struct MapSpec {
    pub info: AggregationInfo,
    /// Number of key parts (`@x[a, b]` has 2, `@x` has 0).
    pub arity: usize,
}

/// Maps whose name starts with this are printed by every walk but never cleared.
pub const CUMULATIVE_PREFIX: &str = "@cumulative_";

/// What a histogram `@name`'s exact sum map is called: `@name_sum[key] = sum(value)`, with
/// the histogram's key and value, gives every key's exact sum for the Prometheus `_sum`.
pub const SUM_SUFFIX: &str = "_sum";

/// A `sum()` map that holds a histogram's exact per-key sum (see [`SUM_SUFFIX`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SumMap {
    /// The sum map itself, decoded like any other map.
    pub spec: MapSpec,
    /// The histogram it belongs to.
    pub histogram: String,
}

/// Sums read for keys the histogram did not have in the same walk (an event counted between
/// the two maps' prints), added to that key's next walk.
pub type SumCarry = HashMap<(String, Vec<KeyPart>), i128>;

/// A bpftrace script ready to run: the user's text, its aggregations, and the text we run.
#[derive(Debug, Clone)]
pub struct Program {
    pub maps: Vec<MapSpec>,
    /// Sum maps of histograms: walked with them, never announced or sent as aggregations.
    pub sums: Vec<SumMap>,
    pub instrumented: String,
}

impl Program {
    /// Finds the script's aggregation maps and appends the walk probe, which fires when
    /// [`walk_trigger`] in `exe` is called with `cookie`.
    pub fn prepare(script: &str, exe: &Path, cookie: u64) -> Program {
        let (maps, sums) = split_sum_maps(all_maps(script));
        let mut walk = String::new();
        for map in &maps {
            walk.push_str(&format!(" print({0});", map.info.name));
            // A cumulative map is never cleared: its reader diffs the walks (explain
            // companions, whose prints symbolise stacks, long enough that clearing after the
            // print would lose what lands meanwhile).
            if !map.info.name.starts_with(CUMULATIVE_PREFIX) {
                walk.push_str(&format!(" clear({0});", map.info.name));
            }
            // Right after its histogram: the fewer events between the two prints, the fewer
            // whose count and sum land in different walks.
            for sum in sums.iter().filter(|s| s.histogram == map.info.name) {
                walk.push_str(&format!(" print({0}); clear({0});", sum.spec.info.name));
            }
        }
        // The path is quoted so that any directory name survives bpftrace's probe parser.
        let exe = exe.display().to_string().replace('"', "\\\"");
        let instrumented = format!(
            "{script}\n\nuprobe:\"{exe}\":heat_actix_walk_trigger /arg0 == {cookie}/ {{{walk} printf(\"{WALK_MARKER}%d\\n\", arg1); }}\n"
        );
        Program {
            maps,
            sums,
            instrumented,
        }
    }

    /// The aggregations as announced to the client.
    pub fn infos(&self) -> Vec<AggregationInfo> {
        self.maps.iter().map(|m| m.info.clone()).collect()
    }

    /// The spec of a printed map: an aggregation or a sum map.
    pub fn spec(&self, name: &str) -> Option<&MapSpec> {
        self.maps
            .iter()
            .chain(self.sums.iter().map(|s| &s.spec))
            .find(|m| m.info.name == name)
    }

    /// Moves each sum map's values onto its histogram's series of the same key, and takes the
    /// sum map out of the snapshot (it is no aggregation of its own). A histogram series whose
    /// key the sum map lacks gets 0 plus what `carry` held for it; a sum whose key the
    /// histogram lacks goes into `carry` for the next walk (a later leftover replaces it, so
    /// keys that never come back do not pile up).
    pub fn attach_sums(&self, snapshot: &mut Snapshot, carry: &mut SumCarry) {
        let mut leftovers = SumCarry::new();
        for sum in &self.sums {
            let mut values: HashMap<Vec<KeyPart>, i128> = HashMap::new();
            if let Some(at) = snapshot
                .aggregations
                .iter()
                .position(|a| a.name == sum.spec.info.name)
            {
                for series in snapshot.aggregations.remove(at).series {
                    if let Value::Scalar(v) = series.value {
                        let total = values.entry(series.key).or_default();
                        *total = total.saturating_add(i128::from(v));
                    }
                }
            }
            let Some(histogram) = snapshot
                .aggregations
                .iter_mut()
                .find(|a| a.name == sum.histogram)
            else {
                continue;
            };
            for series in &mut histogram.series {
                let carried = carry
                    .remove(&(sum.histogram.clone(), series.key.clone()))
                    .unwrap_or(0);
                let walked = values.remove(&series.key).unwrap_or(0);
                series.sum = Some(walked.saturating_add(carried));
            }
            for (key, value) in values {
                leftovers.insert((sum.histogram.clone(), key), value);
            }
        }
        *carry = leftovers;
    }
}

/// Splits a script's maps into its aggregations and the sum maps of its histograms: a `sum()`
/// map named `<histogram>_sum` with as many key parts as a histogram of the script.
fn split_sum_maps(all: Vec<MapSpec>) -> (Vec<MapSpec>, Vec<SumMap>) {
    let histogram_of = |m: &MapSpec| {
        let base = m.info.name.strip_suffix(SUM_SUFFIX)?;
        all.iter()
            .find(|h| h.info.name == base && h.info.kind.is_histogram() && h.arity == m.arity)
            .map(|h| h.info.name.clone())
    };
    let mut maps = Vec::new();
    let mut sums = Vec::new();
    for m in &all {
        match (m.info.kind, histogram_of(m)) {
            (AggKind::Sum, Some(histogram)) => sums.push(SumMap {
                spec: m.clone(),
                histogram,
            }),
            _ => maps.push(m.clone()),
        }
    }
    (maps, sums)
}

/// Fires the walk probe of the bpftrace program whose cookie is `cookie`.
///
/// bpftrace attaches a uprobe to this symbol, so it must keep its name, stay out of line and
/// not be optimised into nothing.
#[no_mangle]
#[inline(never)]
pub extern "C" fn heat_actix_walk_trigger(cookie: u64, walk: u64) -> u64 {
    std::hint::black_box(cookie) ^ std::hint::black_box(walk)
}

/// Aggregation maps in program order, each once: `@name[...] = count() | sum() | … | lhist()`.
/// Maps assigned anything else (`@start[tid] = nsecs`) only hold state and are not listed, nor
/// are the sum maps of histograms (`@name_sum`, see [`SUM_SUFFIX`]): they only weigh them.
pub fn aggregation_maps(script: &str) -> Vec<MapSpec> {
    split_sum_maps(all_maps(script)).0
}

/// Every aggregation map, sum maps of histograms included.
fn all_maps(script: &str) -> Vec<MapSpec> {
    let code = strip_comments_and_strings(script);
    let bytes = code.as_bytes();
    let mut maps: Vec<MapSpec> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'@' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let name = &code[start..i];
        let mut j = skip_space(bytes, i);
        let mut arity = 0;
        if bytes.get(j) == Some(&b'[') {
            let Some((inner, end)) = balanced(&code, j, b'[', b']') else {
                break;
            };
            arity = split_top_level(inner).len();
            j = skip_space(bytes, end);
        }
        // `=` but not `==`.
        if bytes.get(j) != Some(&b'=') || bytes.get(j + 1) == Some(&b'=') {
            continue;
        }
        j = skip_space(bytes, j + 1);
        let fn_start = j;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        let function = &code[fn_start..j];
        let j = skip_space(bytes, j);
        if bytes.get(j) != Some(&b'(') {
            continue;
        }
        let Some(kind) = AggKind::from_bpftrace(function) else {
            continue;
        };
        if maps.iter().any(|m| m.info.name == name) {
            continue;
        }
        let layout = match kind {
            AggKind::Lhist => {
                balanced(&code, j, b'(', b')').and_then(|(args, _)| lhist_layout(args))
            }
            _ => None,
        };
        maps.push(MapSpec {
            info: AggregationInfo {
                name: name.to_owned(),
                kind,
                layout,
            },
            arity,
        });
    }
    maps
}

/// `lhist(value, min, max, step)` with literal bounds gives a layout known in advance.
fn lhist_layout(args: &str) -> Option<Layout> {
    let parts = split_top_level(args);
    let [_, min, max, step] = parts.as_slice() else {
        return None;
    };
    let int = |s: &str| s.trim().parse::<i64>().ok();
    Some(Layout {
        min: int(min)?,
        max: int(max)?,
        step: int(step)?,
    })
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The text between the bracket at `open_at` and its partner, and the index after the partner.
fn balanced(code: &str, open_at: usize, open: u8, close: u8) -> Option<(&str, usize)> {
    let bytes = code.as_bytes();
    let mut depth = 0usize;
    for (k, &b) in bytes.iter().enumerate().skip(open_at) {
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some((&code[open_at + 1..k], k + 1));
            }
        }
    }
    None
}

/// Splits on commas that are not inside brackets or parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (k, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[from..k]);
                from = k + 1;
            }
            _ => {}
        }
    }
    if !text[from..].trim().is_empty() || !parts.is_empty() {
        parts.push(&text[from..]);
    }
    parts
}

/// Blanks out comments and the insides of string literals, keeping every byte offset, so that
/// an `@x = count()` in a comment or a printf format is not taken for code.
fn strip_comments_and_strings(script: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Code,
        Line,
        Block,
        Str,
    }
    let mut out = String::with_capacity(script.len());
    let mut state = State::Code;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            State::Code => match c {
                '/' if chars.peek() == Some(&'/') => {
                    state = State::Line;
                    out.push(' ');
                }
                '/' if chars.peek() == Some(&'*') => {
                    state = State::Block;
                    out.push(' ');
                }
                '"' => {
                    state = State::Str;
                    out.push('"');
                }
                _ => out.push(c),
            },
            State::Line => {
                if c == '\n' {
                    state = State::Code;
                    out.push('\n');
                } else {
                    blank(&mut out, c);
                }
            }
            State::Block => {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    out.push_str("  ");
                    state = State::Code;
                } else {
                    blank(&mut out, c);
                }
            }
            State::Str => match c {
                '\\' => {
                    blank(&mut out, c);
                    if let Some(n) = chars.next() {
                        blank(&mut out, n);
                    }
                }
                '"' => {
                    state = State::Code;
                    out.push('"');
                }
                _ => blank(&mut out, c),
            },
        }
    }
    out
}

/// Replaces a character by spaces of the same UTF-8 length (newlines kept for line numbers).
fn blank(out: &mut String, c: char) {
    if c == '\n' {
        out.push('\n');
    } else {
        out.extend(std::iter::repeat_n(' ', c.len_utf8()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(script: &str) -> Vec<(String, AggKind, usize)> {
        aggregation_maps(script)
            .into_iter()
            .map(|m| (m.info.name, m.info.kind, m.arity))
            .collect()
    }

    #[test]
    fn finds_aggregations_and_skips_state_maps() {
        let script = r#"
            tracepoint:raw_syscalls:sys_enter { @start[tid] = nsecs; }
            tracepoint:raw_syscalls:sys_exit /@start[tid]/ {
                @lat[comm, args->id] = lhist((nsecs - @start[tid]) / 1000, 0, 64, 2);
                @h = hist(nsecs - @start[tid]);
                @n = count();
                @ = sum(1);
                @s[pid] = stats(1);
                @seen[tid] = 1;
                if (@n == 3) { }
                delete(@start[tid]);
            }"#;
        assert_eq!(
            names(script),
            vec![
                ("@lat".into(), AggKind::Lhist, 2),
                ("@h".into(), AggKind::Hist, 0),
                ("@n".into(), AggKind::Count, 0),
                ("@".into(), AggKind::Sum, 0),
                ("@s".into(), AggKind::Stats, 1),
            ]
        );
        let lat = &aggregation_maps(script)[0];
        assert_eq!(
            lat.info.layout,
            Some(Layout {
                min: 0,
                max: 64,
                step: 2
            })
        );
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        let script = "// @a = count();\n/* @b = hist(1); */ BEGIN { printf(\"@c = sum(1)\\n\"); @d[\"x,y\"] = max(1); }";
        assert_eq!(names(script), vec![("@d".into(), AggKind::Max, 1)]);
    }

    #[test]
    fn nested_brackets_in_keys_count_once() {
        assert_eq!(
            names("k { @x[str(args->buf[0]), f(1, 2)] = count(); }"),
            vec![("@x".into(), AggKind::Count, 2)]
        );
    }

    #[test]
    fn instrumented_program_walks_every_aggregation_and_marks_the_end() {
        let p = Program::prepare(
            "k { @a = count(); @b[1] = hist(2); @s[tid] = nsecs; }",
            Path::new("/opt/heat actix"),
            77,
        );
        assert!(p.instrumented.starts_with("k { @a"));
        assert!(p
            .instrumented
            .contains("uprobe:\"/opt/heat actix\":heat_actix_walk_trigger /arg0 == 77/"));
        assert!(p
            .instrumented
            .contains("print(@a); clear(@a); print(@b); clear(@b);"));
        assert!(!p.instrumented.contains("print(@s)"));
        assert!(p.instrumented.contains(WALK_MARKER));
    }

    #[test]
    fn sum_maps_of_histograms_are_walked_with_them_but_not_announced() {
        let script = "k { @lat[1] = hist(2); @lat_sum[1] = sum(2); @n_sum = sum(1); \
                      @w[1, 2] = lhist(3, 0, 10, 1); @w_sum[1] = sum(3); @h = count(); @h_sum = sum(1); }";
        let p = Program::prepare(script, Path::new("/x"), 1);
        // `@n_sum` has no histogram `@n`, `@w_sum` not `@w`'s key, `@h` is no histogram:
        // all three stay ordinary aggregations.
        assert_eq!(
            names(script),
            vec![
                ("@lat".into(), AggKind::Hist, 1),
                ("@n_sum".into(), AggKind::Sum, 0),
                ("@w".into(), AggKind::Lhist, 2),
                ("@w_sum".into(), AggKind::Sum, 1),
                ("@h".into(), AggKind::Count, 0),
                ("@h_sum".into(), AggKind::Sum, 0),
            ]
        );
        assert_eq!(p.infos().len(), 6);
        assert_eq!(p.sums.len(), 1);
        assert_eq!(p.sums[0].histogram, "@lat");
        assert_eq!(p.spec("@lat_sum"), Some(&p.sums[0].spec));
        assert!(p.instrumented.contains(
            "print(@lat); clear(@lat); print(@lat_sum); clear(@lat_sum); print(@n_sum);"
        ));
    }

    #[test]
    fn sums_land_on_their_keys_and_early_ones_wait_for_their_counts() {
        use crate::aggregation::{Aggregation, Bucket, Series};
        let p = Program::prepare(
            "k { @lat[1] = hist(2); @lat_sum[1] = sum(2); }",
            Path::new("/x"),
            1,
        );
        let key = |k: i64| vec![KeyPart::Int(k)];
        let hist = |keys: &[i64]| Aggregation {
            name: "@lat".into(),
            kind: AggKind::Hist,
            series: keys
                .iter()
                .map(|&k| {
                    Series::histogram(
                        key(k),
                        vec![Bucket {
                            lo: Some(4),
                            hi: Some(7),
                            count: 2,
                        }],
                    )
                })
                .collect(),
            folded: 0,
        };
        let sums = |values: &[(i64, i64)]| Aggregation {
            name: "@lat_sum".into(),
            kind: AggKind::Sum,
            series: values
                .iter()
                .map(|&(k, v)| Series {
                    key: key(k),
                    value: Value::Scalar(v),
                    sum: None,
                })
                .collect(),
            folded: 0,
        };
        let mut carry = SumCarry::new();
        // Key 3's sum came in before its counts (an event between the two prints).
        let mut first = Snapshot {
            aggregations: vec![hist(&[0, 1]), sums(&[(0, 11), (1, 9), (3, 5)])],
            ..Default::default()
        };
        p.attach_sums(&mut first, &mut carry);
        assert_eq!(first.aggregations.len(), 1, "the sum map is no aggregation");
        let got: Vec<_> = first.aggregations[0].series.iter().map(|s| s.sum).collect();
        assert_eq!(got, [Some(11), Some(9)]);
        assert_eq!(carry.len(), 1);
        let mut second = Snapshot {
            aggregations: vec![hist(&[3]), sums(&[(3, 6)])],
            ..Default::default()
        };
        p.attach_sums(&mut second, &mut carry);
        assert_eq!(second.aggregations[0].series[0].sum, Some(11));
        assert!(carry.is_empty());
        // A walk whose sum map printed nothing for a key still says its sum (0).
        let mut third = Snapshot {
            aggregations: vec![hist(&[1])],
            ..Default::default()
        };
        p.attach_sums(&mut third, &mut carry);
        assert_eq!(third.aggregations[0].series[0].sum, Some(0));
    }

    #[test]
    fn multibyte_text_keeps_offsets() {
        assert_eq!(
            names("// é\nk { printf(\"ü\"); @x = count(); }"),
            vec![("@x".into(), AggKind::Count, 0)]
        );
    }
}
