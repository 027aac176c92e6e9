//! Tokens of D source text, each with its line and column, so every later error can point at
//! the construct it is about.
//!
//! D's lexer is context-sensitive: between clauses a probe description such as
//! `syscall::read*:entry` or `tick-1s` is one token, inside a predicate or a body the usual
//! C-like tokens apply. This lexer tracks that context itself (brace depth, predicate slashes).

use super::DError;

/// Where a token starts: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A probe description between clauses (`syscall:::entry`, `BEGIN`, `tick-1s`).
    Probe(String),
    Ident(String),
    Int(i64),
    Str(String),
    /// An operator or punctuation mark.
    Punct(&'static str),
    /// `#pragma …` lines, kept so the translator can say they were ignored.
    Pragma(String),
    Eof,
}

/// Operators, longest first so that `<<=` is not read as `<` `<=`.
const PUNCTS: &[&str] = &[
    "<<=", ">>=", "->", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "==", "!=",
    "<=", ">=", "&&", "||", "^^", "<<", ">>", "+", "-", "*", "/", "%", "<", ">", "=", "!", "~",
    "&", "|", "^", "?", ":", "(", ")", "[", "]", "{", "}", ",", ";", ".",
];

/// The slashes around a predicate, told apart from division here because only the lexer
/// knows where the predicate is.
pub const PREDICATE: &str = "/ (predicate)";

/// Characters a probe description may contain (names, globs, `-`, `:`).
fn probe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-:*?.![]$".contains(c)
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    fn lookahead(&self, n: usize) -> Option<char> {
        self.chars.clone().nth(n)
    }

    /// Skips whitespace and comments; an unterminated comment is an error at its start.
    fn skip_trivia(&mut self) -> Result<(), DError> {
        loop {
            match (self.peek(), self.lookahead(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let at = self.pos;
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(DError::at(at, "unterminated comment")),
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn number(&mut self, at: Pos) -> Result<Tok, DError> {
        let mut text = String::new();
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            text.push(self.bump().expect("peeked"));
        }
        // C integer suffixes do not change the value.
        let digits = text.trim_end_matches(['u', 'U', 'l', 'L']);
        let parsed = if let Some(hex) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            i64::from_str_radix(hex, 16)
        } else if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8)
        } else {
            digits.parse()
        };
        parsed
            .map(Tok::Int)
            .map_err(|_| DError::at(at, format!("bad integer constant `{text}`")))
    }

    fn string(&mut self, at: Pos) -> Result<Tok, DError> {
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err(DError::at(at, "unterminated string")),
                Some('"') => return Ok(Tok::Str(text)),
                Some('\\') => match self.bump() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some(c @ ('\\' | '"')) => text.push(c),
                    _ => return Err(DError::at(at, "unsupported escape in string")),
                },
                Some(c) => text.push(c),
            }
        }
    }
}

/// Splits D source into tokens, each with its position; the last token is [`Tok::Eof`].
pub fn tokenize(source: &str) -> Result<Vec<(Tok, Pos)>, DError> {
    let mut lx = Lexer {
        chars: source.chars().peekable(),
        pos: Pos { line: 1, col: 1 },
    };
    let mut out = Vec::new();
    let mut depth = 0usize; // braces
    let mut in_predicate = false;
    let mut parens = 0usize; // inside a predicate, so `(a / b)` is division
    loop {
        lx.skip_trivia()?;
        let at = lx.pos;
        let Some(c) = lx.peek() else {
            out.push((Tok::Eof, at));
            return Ok(out);
        };
        let between_clauses = depth == 0 && !in_predicate;
        if between_clauses && c == '#' {
            let mut line = String::new();
            while lx.peek().is_some_and(|c| c != '\n') {
                line.push(lx.bump().expect("peeked"));
            }
            if !line.starts_with("#pragma") {
                return Err(DError::at(
                    at,
                    "the C preprocessor is not supported (only `#pragma D option` lines)",
                ));
            }
            out.push((Tok::Pragma(line), at));
            continue;
        }
        if between_clauses && probe_char(c) {
            let mut text = String::new();
            while lx.peek().is_some_and(probe_char) {
                text.push(lx.bump().expect("peeked"));
            }
            out.push((Tok::Probe(text), at));
            continue;
        }
        if c.is_ascii_digit() {
            out.push((lx.number(at)?, at));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == '`' {
            let mut text = String::new();
            while lx
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '`')
            {
                text.push(lx.bump().expect("peeked"));
            }
            if text.contains('`') {
                return Err(DError::at(
                    at,
                    format!("kernel symbol `{text}` is not supported"),
                ));
            }
            out.push((Tok::Ident(text), at));
            continue;
        }
        if c == '@' {
            let mut text = String::new();
            text.push(lx.bump().expect("peeked"));
            while lx
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                text.push(lx.bump().expect("peeked"));
            }
            out.push((Tok::Ident(text), at));
            continue;
        }
        if c == '"' {
            out.push((lx.string(at)?, at));
            continue;
        }
        if c == '\'' {
            return Err(DError::at(at, "character constants are not supported"));
        }
        let rest: String = lx.chars.clone().take(3).collect();
        let Some(punct) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
            return Err(DError::at(at, format!("unexpected character `{c}`")));
        };
        for _ in 0..punct.len() {
            lx.bump();
        }
        let mut tok = *punct;
        match tok {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "/" if depth == 0 && !in_predicate => {
                in_predicate = true;
                tok = PREDICATE;
            }
            "/" if depth == 0 && parens == 0 => {
                in_predicate = false;
                tok = PREDICATE;
            }
            "(" if in_predicate => parens += 1,
            ")" if in_predicate => parens = parens.saturating_sub(1),
            _ => {}
        }
        out.push((Tok::Punct(tok), at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn probe_descriptions_are_single_tokens_outside_bodies() {
        assert_eq!(
            toks("syscall::read*:entry /pid == 1/ { x = a/2; }"),
            vec![
                Tok::Probe("syscall::read*:entry".into()),
                Tok::Punct(PREDICATE),
                Tok::Ident("pid".into()),
                Tok::Punct("=="),
                Tok::Int(1),
                Tok::Punct(PREDICATE),
                Tok::Punct("{"),
                Tok::Ident("x".into()),
                Tok::Punct("="),
                Tok::Ident("a".into()),
                Tok::Punct("/"),
                Tok::Int(2),
                Tok::Punct(";"),
                Tok::Punct("}"),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn division_inside_parentheses_stays_in_the_predicate() {
        let t = toks("tick-1s /(a / 2) > 1/ {}");
        assert_eq!(t[0], Tok::Probe("tick-1s".into()));
        assert_eq!(t.iter().filter(|t| **t == Tok::Punct("/")).count(), 1);
        assert_eq!(t.iter().filter(|t| **t == Tok::Punct(PREDICATE)).count(), 2);
        assert_eq!(t[t.len() - 3], Tok::Punct("{"));
    }

    #[test]
    fn numbers_strings_and_positions() {
        let t = tokenize("BEGIN\n{ x = 0x10 + 010 + 7ULL; s = \"a\\\"b\"; }").unwrap();
        assert!(t.contains(&(Tok::Int(16), Pos { line: 2, col: 7 })));
        assert!(t.iter().any(|(t, _)| *t == Tok::Int(8)));
        assert!(t.iter().any(|(t, _)| *t == Tok::Int(7)));
        assert!(t.iter().any(|(t, _)| *t == Tok::Str("a\"b".into())));
    }

    #[test]
    fn errors_point_at_the_offending_text() {
        let e = tokenize("BEGIN {\n  x = 'c';\n}").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7));
        let e = tokenize("/* open").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        let e = tokenize("#include <x.h>").unwrap_err();
        assert!(e.message.contains("preprocessor"));
    }
}
