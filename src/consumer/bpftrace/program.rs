//! Reading a bpftrace script for its aggregations, and adding the walk probe that lets the
//! session's tick (not bpftrace's own timer) decide when each interval ends.
//!
//! bpftrace has no API to walk maps from outside. We append one uprobe on a function of this
//! very binary, [`walk_trigger`]; calling it with this program's cookie makes bpftrace print
//! and clear every aggregation, then print a marker carrying the walk's sequence number. The
//! marker tells the reader where the walk's output ends.

use std::path::Path;

use crate::aggregation::{AggKind, AggregationInfo, Layout};

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

/// A bpftrace script ready to run: the user's text, its aggregations, and the text we run.
#[derive(Debug, Clone)]
pub struct Program {
    pub maps: Vec<MapSpec>,
    pub instrumented: String,
}

impl Program {
    /// Finds the script's aggregation maps and appends the walk probe, which fires when
    /// [`walk_trigger`] in `exe` is called with `cookie`.
    pub fn prepare(script: &str, exe: &Path, cookie: u64) -> Program {
        let maps = aggregation_maps(script);
        let mut walk = String::new();
        for map in &maps {
            walk.push_str(&format!(" print({0});", map.info.name));
            // A cumulative map is never cleared: its reader diffs the walks (explain
            // companions, whose prints symbolise stacks, long enough that clearing after the
            // print would lose what lands meanwhile).
            if !map.info.name.starts_with(CUMULATIVE_PREFIX) {
                walk.push_str(&format!(" clear({0});", map.info.name));
            }
        }
        // The path is quoted so that any directory name survives bpftrace's probe parser.
        let exe = exe.display().to_string().replace('"', "\\\"");
        let instrumented = format!(
            "{script}\n\nuprobe:\"{exe}\":heat_actix_walk_trigger /arg0 == {cookie}/ {{{walk} printf(\"{WALK_MARKER}%d\\n\", arg1); }}\n"
        );
        Program { maps, instrumented }
    }

    /// The aggregations as announced to the client.
    pub fn infos(&self) -> Vec<AggregationInfo> {
        self.maps.iter().map(|m| m.info.clone()).collect()
    }
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
/// Maps assigned anything else (`@start[tid] = nsecs`) only hold state and are not listed.
pub fn aggregation_maps(script: &str) -> Vec<MapSpec> {
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
    fn multibyte_text_keeps_offsets() {
        assert_eq!(
            names("// é\nk { printf(\"ü\"); @x = count(); }"),
            vec![("@x".into(), AggKind::Count, 0)]
        );
    }
}
