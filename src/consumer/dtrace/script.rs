//! What heat-actix reads from a D script before libdtrace sees it: whether it asks for
//! destructive actions (always refused), which aggregations it will produce (announced in
//! `started`), and what this libdtrace cannot run as written (adapted, and said so). Pure text
//! work, so it runs and is tested on hosts without libdtrace.

use crate::aggregation::{AggKind, AggregationInfo, Layout};

/// The D actions that need `-w` / `#pragma D option destructive` (illumos and Oracle
/// `DTRACEACT_PROC_DESTRUCTIVE` and `DTRACEACT_KERNEL_DESTRUCTIVE`, plus the subroutines that
/// write to user memory).
const DESTRUCTIVE_ACTIONS: &[&str] = &[
    "breakpoint",
    "chill",
    "copyout",
    "copyoutstr",
    "freopen",
    "panic",
    "raise",
    "stop",
    "system",
];

/// Why a script is refused before it reaches libdtrace.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The script enables destructive actions through a pragma.
    #[error("line {line}: destructive actions are never enabled by heat-actix (`#pragma D option {option}`)")]
    DestructivePragma { line: usize, option: String },
    /// The script calls a destructive action.
    #[error("line {line}: `{action}()` is a destructive action, which heat-actix never enables")]
    DestructiveAction { line: usize, action: &'static str },
}

/// The script with comments and string literals blanked out (newlines kept, so line numbers
/// stay true), so that neither a comment nor a `printf` format can trigger or hide a match.
fn code_only(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    out.push(if c == '\n' { '\n' } else { ' ' });
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push_str("  ");
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            '"' | '\'' => {
                out.push(' ');
                let mut escaped = false;
                for d in chars.by_ref() {
                    out.push(if d == '\n' { '\n' } else { ' ' });
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier starting at `at` (which must not continue one), and where it ends.
fn ident_at(code: &[u8], at: usize) -> Option<(&str, usize)> {
    let first = *code.get(at)?;
    if !(first.is_ascii_alphabetic() || first == b'_') || (at > 0 && is_ident(code[at - 1])) {
        return None;
    }
    let end = (at..code.len())
        .find(|&i| !is_ident(code[i]))
        .unwrap_or(code.len());
    // ASCII bytes only, so this is a char boundary and valid UTF-8.
    Some((std::str::from_utf8(&code[at..end]).ok()?, end))
}

/// The index of the first byte at or after `at` that is not whitespace.
fn skip_space(code: &[u8], at: usize) -> usize {
    (at..code.len())
        .find(|&i| !code[i].is_ascii_whitespace())
        .unwrap_or(code.len())
}

/// Whether this build's libdtrace implements `vtimestamp`. Oracle's DTrace 2.x does not: its
/// own test suite marks the variable as still missing, and 2.0.0 fails every probe that reads
/// it with "illegal operation", so a script using it would send only errors.
pub const HAS_VTIMESTAMP: bool = !cfg!(dtrace_oracle);

/// What stands in for `vtimestamp` where libdtrace lacks it, and the note `started` carries.
const VTIMESTAMP_STAND_IN: &str = "timestamp";
const VTIMESTAMP_NOTE: &str = "vtimestamp (the thread's on-CPU time) is approximated by \
    timestamp: this libdtrace (Oracle DTrace 2.x) does not implement vtimestamp. Latencies \
    include time spent off-CPU.";

/// The script this libdtrace will run, and notes on what was adapted: with `has_vtimestamp`
/// false, the built-in `vtimestamp` becomes `timestamp` (never a member or variable of that
/// name, a comment or a string).
pub fn adapt(script: &str, has_vtimestamp: bool) -> (String, Vec<String>) {
    if has_vtimestamp {
        return (script.to_owned(), Vec::new());
    }
    // code_only keeps one char per char, so indices into both agree.
    let code: Vec<char> = code_only(script).chars().collect();
    let text: Vec<char> = script.chars().collect();
    let word: Vec<char> = "vtimestamp".chars().collect();
    let ident = |c: Option<&char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_');
    let mut out = String::with_capacity(script.len());
    let mut replaced = false;
    let mut i = 0;
    while i < text.len() {
        let end = i + word.len();
        let starts_word = i == 0 || !ident(code.get(i - 1));
        let builtin = code.get(i..end) == Some(&word[..])
            && starts_word
            && !ident(code.get(end))
            && !after_member_access(&code[..i]);
        if builtin {
            out.push_str(VTIMESTAMP_STAND_IN);
            replaced = true;
            i = end;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    let notes = if replaced {
        vec![VTIMESTAMP_NOTE.to_owned()]
    } else {
        Vec::new()
    };
    (out, notes)
}

/// Whether code ending here is `x->` or `x.`, so the next identifier names a member.
fn after_member_access(before: &[char]) -> bool {
    let mut back = before.iter().rev().skip_while(|c| c.is_whitespace());
    match back.next() {
        Some('.') => true,
        Some('>') => back.next() == Some(&'-'),
        _ => false,
    }
}

/// Refuses a script that asks for destructive actions, naming the line.
pub fn check_not_destructive(script: &str) -> Result<(), ScriptError> {
    let code = code_only(script);
    for (index, line) in code.lines().enumerate() {
        let Some(directive) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let words: Vec<&str> = directive.split_whitespace().collect();
        if let ["pragma", "D", "option", option, ..] = words.as_slice() {
            if *option == "destructive" || option.starts_with("destructive=") {
                return Err(ScriptError::DestructivePragma {
                    line: index + 1,
                    option: words[3..].join(" "),
                });
            }
        }
    }
    let bytes = code.as_bytes();
    for at in 0..bytes.len() {
        let Some((name, end)) = ident_at(bytes, at) else {
            continue;
        };
        if bytes.get(skip_space(bytes, end)) != Some(&b'(') {
            continue;
        }
        // A member (`.x(`, `->x(`), variable (`@x`, `$x`) or kernel symbol is not a call.
        if at > 0 && matches!(bytes[at - 1], b'.' | b'>' | b'@' | b'$' | b'`') {
            continue;
        }
        if let Some(action) = DESTRUCTIVE_ACTIONS.iter().find(|a| **a == name) {
            return Err(ScriptError::DestructiveAction {
                line: line_of(&code, at),
                action,
            });
        }
    }
    Ok(())
}

/// The aggregating function called at `at`, and where its arguments start.
fn aggregating_call(code: &[u8], at: usize) -> Option<(AggKind, usize)> {
    let (function, end) = ident_at(code, at)?;
    let kind = match function {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => AggKind::Avg,
        "stddev" => AggKind::Stddev,
        "quantize" => AggKind::Quantize,
        "lquantize" => AggKind::Lquantize,
        "llquantize" => AggKind::Llquantize,
        _ => return None,
    };
    let open = skip_space(code, end);
    (code.get(open) == Some(&b'(')).then_some((kind, open + 1))
}

/// The aggregations a script assigns (`@name[keys] = function(…)`), in the order they first
/// appear, with the lquantize layout when its bounds are literals. libdtrace only reveals
/// aggregations once they hold data, so `started` is announced from the text; walks add any
/// this reading missed.
pub fn aggregations(script: &str) -> Vec<AggregationInfo> {
    let code = code_only(script);
    let bytes = code.as_bytes();
    let mut found: Vec<AggregationInfo> = Vec::new();
    for at in (0..bytes.len()).filter(|&i| bytes[i] == b'@') {
        let (name, mut next) = match ident_at(bytes, at + 1) {
            Some((name, end)) => (format!("@{name}"), end),
            None => ("@".to_owned(), at + 1),
        };
        next = skip_space(bytes, next);
        if bytes.get(next) == Some(&b'[') {
            // The matching `]`: keys may index too (`@a[args[3]->tcps_rport]`).
            let mut depth = 0usize;
            let Some(close) = (next..bytes.len()).find(|&i| {
                match bytes[i] {
                    b'[' => depth += 1,
                    b']' => depth -= 1,
                    _ => {}
                }
                depth == 0
            }) else {
                continue;
            };
            next = skip_space(bytes, close + 1);
        }
        if bytes.get(next) != Some(&b'=') || bytes.get(next + 1) == Some(&b'=') {
            continue;
        }
        let Some((kind, args)) = aggregating_call(bytes, skip_space(bytes, next + 1)) else {
            continue;
        };
        if found.iter().any(|a| a.name == name) {
            continue;
        }
        let layout = match kind {
            AggKind::Lquantize => lquantize_layout(&arguments(&code[args..])),
            _ => None,
        };
        found.push(AggregationInfo { name, kind, layout });
    }
    found
}

/// The top-level, comma-separated arguments of a call whose `(` was just consumed.
fn arguments(rest: &str) -> Vec<&str> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' if depth == 0 => {
                args.push(rest[start..i].trim());
                return args;
            }
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                args.push(rest[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    Vec::new() // unbalanced: libdtrace will say what is wrong
}

/// `lquantize(value, lower, upper [, step])` with literal bounds: the layout `started` shows.
fn lquantize_layout(args: &[&str]) -> Option<Layout> {
    let int = |s: &str| s.parse::<i64>().ok();
    let (min, max) = (int(args.get(1)?)?, int(args.get(2)?)?);
    let step = match args.get(3) {
        Some(s) => int(s)?,
        None => 1,
    };
    Some(Layout { min, max, step })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtimestamp_becomes_timestamp_only_where_it_is_the_builtin() {
        let script = "/* vtimestamp */ syscall:::entry { self->vtimestamp = vtimestamp; }\n\
            syscall:::return /self->vtimestamp/ { @t = quantize(vtimestamp - self->vtimestamp);\n\
            printf(\"vtimestamp\"); this->x = myvtimestamp + vtimestamp_2; }";
        let (adapted, notes) = adapt(script, false);
        assert_eq!(
            adapted,
            "/* vtimestamp */ syscall:::entry { self->vtimestamp = timestamp; }\n\
            syscall:::return /self->vtimestamp/ { @t = quantize(timestamp - self->vtimestamp);\n\
            printf(\"vtimestamp\"); this->x = myvtimestamp + vtimestamp_2; }"
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("approximated by timestamp"), "{notes:?}");
    }

    #[test]
    fn scripts_run_as_written_where_libdtrace_has_vtimestamp() {
        let seed = crate::dlang::SEED;
        assert_eq!(adapt(seed, true), (seed.to_owned(), Vec::new()));
        let (adapted, notes) = adapt("BEGIN { x = timestamp; }", false);
        assert_eq!(
            (adapted.as_str(), notes.len()),
            ("BEGIN { x = timestamp; }", 0)
        );
        // Multi-byte text before the word keeps the indices of code and script in step.
        let (adapted, _) = adapt("/* é */ BEGIN { t = vtimestamp; }", false);
        assert_eq!(adapted, "/* é */ BEGIN { t = timestamp; }");
    }

    const SEED: &str = "syscall:::entry\n{\nself->syscall_entry_ts[probefunc] = vtimestamp;\n}\nsyscall:::return\n/self->syscall_entry_ts[probefunc]/\n{\n\n@time[probefunc] = lquantize((vtimestamp - self->syscall_entry_ts[probefunc] ) / 1000, 0, 63, 2);\nself->syscall_entry_ts[probefunc] = 0;\n}";

    #[test]
    fn the_seed_script_is_allowed_and_announces_its_lquantize() {
        assert_eq!(check_not_destructive(SEED), Ok(()));
        assert_eq!(
            aggregations(SEED),
            vec![AggregationInfo {
                name: "@time".into(),
                kind: AggKind::Lquantize,
                layout: Some(Layout {
                    min: 0,
                    max: 63,
                    step: 2
                }),
            }]
        );
    }

    #[test]
    fn destructive_pragmas_and_actions_are_refused_with_their_line() {
        let pragma = "BEGIN { x = 1; }\n#pragma D option destructive\n";
        assert_eq!(
            check_not_destructive(pragma),
            Err(ScriptError::DestructivePragma {
                line: 2,
                option: "destructive".into()
            })
        );
        assert!(check_not_destructive("  #  pragma D option destructive=1").is_err());
        for action in DESTRUCTIVE_ACTIONS {
            let script = format!("syscall::read:entry\n{{\n  {action} (\"x\");\n}}");
            assert_eq!(
                check_not_destructive(&script),
                Err(ScriptError::DestructiveAction { line: 3, action }),
                "{script}"
            );
        }
        let nested = "BEGIN { trace(raise(9)); }";
        assert!(check_not_destructive(nested).is_err(), "{nested}");
        let err = check_not_destructive("BEGIN { system(\"reboot\"); }").unwrap_err();
        assert!(err.to_string().contains("system()"), "{err}");
    }

    #[test]
    fn lookalikes_are_not_destructive() {
        let fine = [
            // In a comment or a string.
            "BEGIN { /* system(\"x\") */ printf(\"raise(%d)\", 1); } // stop()",
            // A probe named like an action.
            "syscall::stop:entry { @[probefunc] = count(); }",
            // Members, variables and aggregation names.
            "BEGIN { this->system = 1; self->stop = 2; @panic = count(); x.chill = 3; }",
            // Longer identifiers.
            "BEGIN { systemd(1); mystop(2); }",
            // An argument to another call is still found (see the refusal test), this is not.
            "BEGIN { trace(stopped); }",
            // Other pragmas.
            "#pragma D option quiet\n#pragma D option bufsize=4m\nBEGIN {}",
        ];
        for script in fine {
            assert_eq!(check_not_destructive(script), Ok(()), "{script}");
        }
    }

    #[test]
    fn every_aggregating_function_is_announced_once_in_order() {
        let script = r#"
            BEGIN { @ = count(); }
            syscall:::entry { @calls[probefunc, pid] = count(); @bytes = sum(arg2); }
            syscall:::return { @lo = min(arg0); @hi = max(arg0); @mean = avg(arg0);
                @sd = stddev(arg0); @q[execname] = quantize(arg0);
                @l = lquantize(arg0, -10, 10); @ll = llquantize(arg0, 10, 0, 6, 20);
                @calls[probefunc, pid] = count(); @v = lquantize(arg0, 0, x, 1); }
            tcp:::connect-established { @port[args[3]->tcps_rport] = quantize(arg0); }
        "#;
        let infos = aggregations(script);
        let names: Vec<(&str, AggKind)> = infos.iter().map(|a| (a.name.as_str(), a.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("@", AggKind::Count),
                ("@calls", AggKind::Count),
                ("@bytes", AggKind::Sum),
                ("@lo", AggKind::Min),
                ("@hi", AggKind::Max),
                ("@mean", AggKind::Avg),
                ("@sd", AggKind::Stddev),
                ("@q", AggKind::Quantize),
                ("@l", AggKind::Lquantize),
                ("@ll", AggKind::Llquantize),
                ("@v", AggKind::Lquantize),
                ("@port", AggKind::Quantize),
            ]
        );
        assert_eq!(
            infos[8].layout,
            Some(Layout {
                min: -10,
                max: 10,
                step: 1
            })
        );
        // Non-literal bounds: no layout up front.
        assert_eq!(infos[10].layout, None);
    }
}
