//! Parsing D tokens into the [`ast`](super::ast): C precedence for expressions, D's clause
//! structure around them, and positioned errors for anything outside the grammar.

use super::ast::{Aggregate, Clause, Expr, ExprKind, Program, Scope, Stmt};
use super::lexer::{tokenize, Pos, Tok, PREDICATE};
use super::DError;

/// Binary operators by precedence level, loosest first (C's table, as D has it).
const LEVELS: &[&[&str]] = &[
    &["||"],
    &["^^"],
    &["&&"],
    &["|"],
    &["^"],
    &["&"],
    &["==", "!="],
    &["<", "<=", ">", ">="],
    &["<<", ">>"],
    &["+", "-"],
    &["*", "/", "%"],
];

const ASSIGN_OPS: &[&str] = &[
    "=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=",
];

/// Parses a whole D program.
pub fn parse(source: &str) -> Result<Program, DError> {
    let tokens = tokenize(source)?;
    let mut p = Parser { tokens, at: 0 };
    let mut program = Program {
        pragmas: Vec::new(),
        clauses: Vec::new(),
    };
    loop {
        match p.peek().clone() {
            Tok::Eof => break,
            Tok::Pragma(text) => {
                let pos = p.pos();
                p.at += 1;
                program.pragmas.push((text, pos));
            }
            _ => program.clauses.push(p.clause()?),
        }
    }
    if program.clauses.is_empty() {
        return Err(DError::at(
            Pos { line: 1, col: 1 },
            "the program has no probe clauses",
        ));
    }
    Ok(program)
}

struct Parser {
    tokens: Vec<(Tok, Pos)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].0
    }

    fn pos(&self) -> Pos {
        self.tokens[self.at].1
    }

    fn next(&mut self) -> (Tok, Pos) {
        let t = self.tokens[self.at].clone();
        if t.0 != Tok::Eof {
            self.at += 1;
        }
        t
    }

    fn is(&self, punct: &str) -> bool {
        matches!(self.peek(), Tok::Punct(p) if *p == punct)
    }

    fn eat(&mut self, punct: &str) -> bool {
        let found = self.is(punct);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, punct: &str, context: &str) -> Result<Pos, DError> {
        let pos = self.pos();
        if self.eat(punct) {
            Ok(pos)
        } else {
            Err(DError::at(
                pos,
                format!(
                    "expected `{punct}` {context}, found {}",
                    describe(self.peek())
                ),
            ))
        }
    }

    fn clause(&mut self) -> Result<Clause, DError> {
        let mut probes = Vec::new();
        loop {
            let (tok, pos) = self.next();
            match tok {
                Tok::Probe(text) => probes.push((text, pos)),
                other => {
                    return Err(DError::at(
                        pos,
                        format!("expected a probe description, found {}", describe(&other)),
                    ))
                }
            }
            if !self.eat(",") {
                break;
            }
        }
        let predicate = if self.eat(PREDICATE) {
            let e = self.expr()?;
            self.expect(PREDICATE, "to end the predicate")?;
            Some(e)
        } else {
            None
        };
        self.expect("{", "to open the clause body")?;
        let mut body = Vec::new();
        while !self.eat("}") {
            if self.eat(";") {
                continue;
            }
            if *self.peek() == Tok::Eof {
                return Err(DError::at(
                    self.pos(),
                    "missing `}` at the end of the clause",
                ));
            }
            body.push(self.statement()?);
            if *self.peek() == Tok::Eof {
                return Err(DError::at(
                    self.pos(),
                    "missing `}` at the end of the clause",
                ));
            }
            if !self.is("}") {
                self.expect(";", "after the statement")?;
            }
        }
        Ok(Clause {
            probes,
            predicate,
            body,
        })
    }

    fn statement(&mut self) -> Result<Stmt, DError> {
        let pos = self.pos();
        if let Tok::Ident(word) = self.peek() {
            if matches!(
                word.as_str(),
                "if" | "else" | "for" | "while" | "return" | "int" | "string" | "this_thread"
            ) {
                return Err(DError::at(
                    pos,
                    format!("`{word}` statements and declarations are not supported"),
                ));
            }
        }
        let target = self.expr()?;
        if let ExprKind::AggRef { name, keys } = &target.kind {
            return self.aggregate(name.clone(), keys.clone(), pos);
        }
        if self.eat("++") {
            return Ok(increment(target, "+=", pos));
        }
        if self.eat("--") {
            return Ok(increment(target, "-=", pos));
        }
        if let Tok::Punct(op) = *self.peek() {
            if ASSIGN_OPS.contains(&op) {
                self.at += 1;
                let value = self.expr()?;
                return Ok(Stmt::Assign {
                    target,
                    op,
                    value,
                    pos,
                });
            }
        }
        Ok(Stmt::Expr(target))
    }

    /// The rest of `@name[keys] = function(args)` after the name and keys.
    fn aggregate(&mut self, name: String, keys: Vec<Expr>, pos: Pos) -> Result<Stmt, DError> {
        self.expect("=", "after an aggregation (`@a = count()`)")?;
        let function_pos = self.pos();
        let call = self.expr()?;
        let ExprKind::Call(function, args) = call.kind else {
            return Err(DError::at(
                function_pos,
                "an aggregation is assigned an aggregating function such as count() or quantize()",
            ));
        };
        Ok(Stmt::Aggregate(Aggregate {
            name,
            keys,
            function,
            args,
            pos,
            function_pos,
        }))
    }

    fn expr(&mut self) -> Result<Expr, DError> {
        let cond = self.binary(0)?;
        if !self.is("?") {
            return Ok(cond);
        }
        self.at += 1;
        let a = self.expr()?;
        self.expect(":", "in the `?:` expression")?;
        let b = self.expr()?;
        Ok(Expr {
            pos: cond.pos,
            kind: ExprKind::Ternary(Box::new(cond), Box::new(a), Box::new(b)),
        })
    }

    fn binary(&mut self, level: usize) -> Result<Expr, DError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        loop {
            let op = match self.peek() {
                Tok::Punct(p) if LEVELS[level].contains(p) => *p,
                _ => return Ok(left),
            };
            self.at += 1;
            let right = self.binary(level + 1)?;
            left = Expr {
                pos: left.pos,
                kind: ExprKind::Binary(op, Box::new(left), Box::new(right)),
            };
        }
    }

    fn unary(&mut self) -> Result<Expr, DError> {
        let pos = self.pos();
        for op in ["-", "!", "~", "+"] {
            if self.eat(op) {
                let e = self.unary()?;
                return Ok(match (op, e.kind) {
                    ("+", kind) => Expr { kind, pos },
                    ("-", ExprKind::Int(n)) => Expr {
                        kind: ExprKind::Int(-n),
                        pos,
                    },
                    (_, kind) => Expr {
                        kind: ExprKind::Unary(op, Box::new(Expr { kind, pos: e.pos })),
                        pos,
                    },
                });
            }
        }
        for op in ["*", "&", "++", "--"] {
            if self.is(op) {
                return Err(DError::at(
                    pos,
                    format!("unary `{op}` (pointers, prefix increments) is not supported"),
                ));
            }
        }
        if self.is("(") {
            if let Tok::Ident(word) = &self.tokens[self.at + 1].0 {
                if is_type_name(word) {
                    return Err(DError::at(
                        pos,
                        format!("casts (`({word} …)`) are not supported"),
                    ));
                }
            }
            self.at += 1;
            let e = self.expr()?;
            self.expect(")", "to close the parenthesis")?;
            return Ok(e);
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, DError> {
        let (tok, pos) = self.next();
        let kind = match tok {
            Tok::Int(n) => ExprKind::Int(n),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Ident(word) if word == "self" || word == "this" => {
                let arrow = self.pos();
                if !self.eat("->") {
                    return Err(DError::at(arrow, format!("expected `->` after `{word}`")));
                }
                let name = self.ident("a variable name")?;
                let keys = if self.is("[") {
                    Some(self.keys()?)
                } else {
                    None
                };
                let scope = if word == "self" {
                    Scope::Thread
                } else {
                    Scope::Clause
                };
                ExprKind::Var { scope, name, keys }
            }
            Tok::Ident(word) if word == "args" => {
                self.expect("[", "after `args`")?;
                let index_pos = self.pos();
                let Tok::Int(index) = self.next().0 else {
                    return Err(DError::at(index_pos, "`args[]` takes a constant index"));
                };
                self.expect("]", "after the `args` index")?;
                let member = if self.eat("->") {
                    Some(self.ident("a member name")?)
                } else {
                    None
                };
                ExprKind::Args { index, member }
            }
            Tok::Ident(word) if word.starts_with('@') => {
                let keys = if self.is("[") {
                    self.keys()?
                } else {
                    Vec::new()
                };
                ExprKind::AggRef { name: word, keys }
            }
            Tok::Ident(word) if word == "sizeof" || word == "offsetof" || word == "stringof" => {
                return Err(DError::at(pos, format!("`{word}` is not supported")))
            }
            Tok::Ident(word) => {
                if self.is("(") {
                    let args = self.call_args()?;
                    ExprKind::Call(word, args)
                } else if self.is("[") {
                    ExprKind::Var {
                        scope: Scope::Global,
                        name: word,
                        keys: Some(self.keys()?),
                    }
                } else {
                    ExprKind::Ident(word)
                }
            }
            Tok::Probe(_) | Tok::Pragma(_) | Tok::Eof | Tok::Punct(_) => {
                return Err(DError::at(
                    pos,
                    format!("expected an expression, found {}", describe(&tok)),
                ))
            }
        };
        let e = Expr { kind, pos };
        for op in [".", "->"] {
            if self.is(op) {
                return Err(DError::at(
                    self.pos(),
                    format!("member access `{op}` is only supported on `args[n]`"),
                ));
            }
        }
        Ok(e)
    }

    fn ident(&mut self, what: &str) -> Result<String, DError> {
        let (tok, pos) = self.next();
        match tok {
            Tok::Ident(name) => Ok(name),
            other => Err(DError::at(
                pos,
                format!("expected {what}, found {}", describe(&other)),
            )),
        }
    }

    fn keys(&mut self) -> Result<Vec<Expr>, DError> {
        self.expect("[", "to open the keys")?;
        let mut keys = vec![self.expr()?];
        while self.eat(",") {
            keys.push(self.expr()?);
        }
        self.expect("]", "to close the keys")?;
        Ok(keys)
    }

    fn call_args(&mut self) -> Result<Vec<Expr>, DError> {
        self.expect("(", "to open the arguments")?;
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",", "between arguments")?;
        }
    }
}

fn increment(target: Expr, op: &'static str, pos: Pos) -> Stmt {
    Stmt::Assign {
        target,
        op,
        value: Expr {
            kind: ExprKind::Int(1),
            pos,
        },
        pos,
    }
}

fn is_type_name(word: &str) -> bool {
    matches!(
        word,
        "int"
            | "uint"
            | "long"
            | "unsigned"
            | "signed"
            | "char"
            | "short"
            | "string"
            | "struct"
            | "void"
            | "int8_t"
            | "int16_t"
            | "int32_t"
            | "int64_t"
            | "uint8_t"
            | "uint16_t"
            | "uint32_t"
            | "uint64_t"
            | "uintptr_t"
            | "size_t"
    )
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Probe(p) => format!("`{p}`"),
        Tok::Ident(i) => format!("`{i}`"),
        Tok::Int(n) => format!("`{n}`"),
        Tok::Str(_) => "a string".into(),
        Tok::Punct(p) if *p == PREDICATE => "`/`".into(),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Pragma(_) => "a #pragma".into(),
        Tok::Eof => "the end of the script".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_script_parses() {
        let p = parse(super::super::SEED).unwrap();
        assert_eq!(p.clauses.len(), 2);
        assert_eq!(p.clauses[0].probes[0].0, "syscall:::entry");
        assert!(p.clauses[1].predicate.is_some());
        let Stmt::Aggregate(Aggregate {
            name,
            keys,
            function,
            args,
            ..
        }) = &p.clauses[1].body[0]
        else {
            panic!("{:?}", p.clauses[1].body[0]);
        };
        assert_eq!((name.as_str(), function.as_str()), ("@time", "lquantize"));
        assert_eq!((keys.len(), args.len()), (1, 4));
        assert!(matches!(
            &p.clauses[1].body[1],
            Stmt::Assign { op: "=", .. }
        ));
    }

    #[test]
    fn precedence_is_c_precedence() {
        let p = parse("BEGIN { x = 1 + 2 * 3 == 7 ? a : b; }").unwrap();
        let Stmt::Assign { value, .. } = &p.clauses[0].body[0] else {
            panic!()
        };
        let ExprKind::Ternary(cond, _, _) = &value.kind else {
            panic!("{value:?}")
        };
        let ExprKind::Binary("==", sum, _) = &cond.kind else {
            panic!("{cond:?}")
        };
        let ExprKind::Binary("+", _, product) = &sum.kind else {
            panic!("{sum:?}")
        };
        assert!(matches!(product.kind, ExprKind::Binary("*", _, _)));
    }

    #[test]
    fn errors_name_the_construct_and_its_position() {
        let cases = [
            ("BEGIN {\n  x = (int)y;\n}", (2, 7), "casts"),
            ("BEGIN { if (x) { } }", (1, 9), "`if`"),
            (
                "BEGIN { x = 1 }\nEND { y = ; }",
                (2, 11),
                "expected an expression",
            ),
            ("BEGIN { x = 1 ", (1, 15), "missing `}`"),
            ("BEGIN { @a = 3; }", (1, 14), "aggregating function"),
            ("BEGIN { x = y->z; }", (1, 14), "member access"),
            ("BEGIN /x/ x = 1; }", (1, 11), "expected `{`"),
        ];
        for (src, (line, col), text) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!((e.line, e.column), (line, col), "{src}: {e}");
            assert!(e.message.contains(text), "{src}: {e}");
        }
    }
}
