//! The syntax tree of the D subset: clauses (probes, predicate, statements) and expressions,
//! every node carrying the position of the text it came from.

pub use super::lexer::Pos;

/// A whole D program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub pragmas: Vec<(String, Pos)>,
    pub clauses: Vec<Clause>,
}

/// `probe, probe /predicate/ { statements }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub probes: Vec<(String, Pos)>,
    pub predicate: Option<Expr>,
    pub body: Vec<Stmt>,
}

/// Where a variable lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A global (`x`, `x[k]`).
    Global,
    /// Thread-local (`self->x`).
    Thread,
    /// Clause-local (`this->x`).
    Clause,
}

/// A statement of a clause body.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `var op value`; `op` is `=`, `+=`, … (`x++` arrives as `x += 1`).
    Assign {
        target: Expr,
        op: &'static str,
        value: Expr,
        pos: Pos,
    },
    Aggregate(Aggregate),
    /// Any other expression used as a statement (a function call, most often).
    Expr(Expr),
}

/// `@name[keys] = function(args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub name: String,
    pub keys: Vec<Expr>,
    pub function: String,
    pub args: Vec<Expr>,
    pub pos: Pos,
    pub function_pos: Pos,
}

/// An expression and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Str(String),
    /// A builtin or a global scalar, to be told apart by the translator.
    Ident(String),
    /// A variable, with keys when it is an associative array.
    Var {
        scope: Scope,
        name: String,
        keys: Option<Vec<Expr>>,
    },
    /// `args[n]`, optionally `->member`.
    Args {
        index: i64,
        member: Option<String>,
    },
    /// `@name[keys]`: the target of an aggregating assignment (D cannot read aggregations).
    AggRef {
        name: String,
        keys: Vec<Expr>,
    },
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}
