//! The D subset → bpftrace 0.17 translation: one bpftrace clause per D probe description,
//! variables mapped to maps and scratch variables, builtins to their Linux meaning, and each
//! aggregation to the bpftrace function whose output the post-walk rewrite can relabel into
//! DTrace's kind and bucket edges. Anything else is refused where it is written.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::ast::{Aggregate, Clause, Expr, ExprKind, Pos, Program, Scope, Stmt};
use super::buckets::{self, AggPlan, DRewrite, Relabel};
use super::probes::{self, ProbeCtx, Ty};
use super::DError;
use crate::aggregation::{AggKind, Layout};

/// bpftrace 0.17 refuses `lhist` with more buckets than this.
const LHIST_MAX_BUCKETS: i64 = 1000;

/// What a translation produces.
#[derive(Debug, Clone)]
pub struct Output {
    pub bpftrace: String,
    pub notes: Vec<String>,
    pub rewrite: DRewrite,
}

/// A translated expression.
struct Tr {
    text: String,
    ty: Ty,
}

/// What is known of a variable: its value type and key types (for associative arrays).
#[derive(Clone)]
struct VarInfo {
    ty: Ty,
    keys: Option<Vec<Ty>>,
    pos: Pos,
}

/// What is known of an aggregation, to refuse inconsistent use and to plan its rewrite.
struct AggInfo {
    signature: String,
    keys: Vec<Ty>,
    pos: Pos,
    plan: AggPlan,
}

struct Translator {
    out: String,
    notes: Vec<String>,
    /// Global and thread-local variables, by (scope, name).
    vars: HashMap<(bool, String), VarInfo>,
    /// Globals assigned anywhere: an identifier that is neither a builtin nor one of these is
    /// an error.
    globals: Vec<String>,
    aggs: Vec<(String, AggInfo)>,
    scratch: usize,
    wall_offset: Option<i64>,
}

/// Translates a parsed D program.
pub fn translate(program: &Program) -> Result<Output, DError> {
    let mut t = Translator {
        out: String::new(),
        notes: Vec::new(),
        vars: HashMap::new(),
        globals: assigned_globals(program),
        aggs: Vec::new(),
        scratch: 0,
        wall_offset: None,
    };
    for (pragma, _) in &program.pragmas {
        t.note(format!(
            "`{pragma}` is ignored: heat-actix prints nothing and sends aggregations every tick"
        ));
    }
    for clause in &program.clauses {
        for (text, pos) in &clause.probes {
            for text in probes::expand(text) {
                let ctx = probes::probe(&text, *pos)?;
                if let Some(note) = &ctx.note {
                    t.note(note.clone());
                }
                t.clause(clause, &ctx)?;
            }
        }
    }
    let plans = t.aggs.into_iter().map(|(_, a)| a.plan).collect();
    Ok(Output {
        bpftrace: t.out,
        notes: t.notes,
        rewrite: DRewrite { plans },
    })
}

/// Names of globals that some statement assigns.
fn assigned_globals(program: &Program) -> Vec<String> {
    let mut names = Vec::new();
    for clause in &program.clauses {
        for stmt in &clause.body {
            if let Stmt::Assign { target, .. } = stmt {
                match &target.kind {
                    ExprKind::Ident(name)
                    | ExprKind::Var {
                        scope: Scope::Global,
                        name,
                        ..
                    } => names.push(name.clone()),
                    _ => {}
                }
            }
        }
    }
    names
}

/// Clause-local state: `this->` variables assigned so far, scratch statements.
#[derive(Default)]
struct Local {
    this: HashMap<String, Ty>,
}

impl Translator {
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn clause(&mut self, clause: &Clause, ctx: &ProbeCtx) -> Result<(), DError> {
        let mut local = Local::default();
        let mut conditions: Vec<String> = ctx.filter.iter().map(|f| format!("({f})")).collect();
        if let Some(pred) = &clause.predicate {
            let p = self.expr(pred, ctx, &mut local)?;
            if p.ty == Ty::Str {
                return Err(DError::at(
                    pred.pos,
                    "a predicate must be a number or comparison, not a string",
                ));
            }
            conditions.push(format!("({})", p.text));
        }
        let mut body = String::new();
        for stmt in &clause.body {
            self.statement(stmt, ctx, &mut local, &mut body)?;
        }
        let _ = writeln!(self.out, "{}", ctx.probe);
        if !conditions.is_empty() {
            let _ = writeln!(self.out, "/{}/", conditions.join(" && "));
        }
        let _ = writeln!(self.out, "{{\n{body}}}\n");
        Ok(())
    }

    fn statement(
        &mut self,
        stmt: &Stmt,
        ctx: &ProbeCtx,
        local: &mut Local,
        body: &mut String,
    ) -> Result<(), DError> {
        match stmt {
            Stmt::Assign {
                target,
                op,
                value,
                pos,
            } => {
                // `x op= v` is `x = x op v`, so it gets the operator's D meaning.
                let combined;
                let value = match op.strip_suffix('=').filter(|o| !o.is_empty()) {
                    Some(binop) => {
                        combined = Expr {
                            kind: ExprKind::Binary(
                                binop,
                                Box::new(target.clone()),
                                Box::new(value.clone()),
                            ),
                            pos: *pos,
                        };
                        &combined
                    }
                    None => value,
                };
                let v = self.expr(value, ctx, local)?;
                if *op != "=" && v.ty == Ty::Str {
                    return Err(DError::at(
                        *pos,
                        format!("`{op}` needs numbers, not strings"),
                    ));
                }
                if let ExprKind::Var {
                    scope: Scope::Clause,
                    name,
                    keys,
                } = &target.kind
                {
                    if keys.is_some() {
                        return Err(DError::at(
                            target.pos,
                            "clause-local (`this->`) associative arrays are not supported",
                        ));
                    }
                    let var = format!("$this_{name}");
                    let known = local.this.get(name).copied();
                    if let Some(ty) = known.filter(|ty| !ty.compatible(v.ty)) {
                        return Err(DError::at(
                            *pos,
                            format!(
                                "this->{name} holds a {} here but a {} before",
                                tyname(v.ty),
                                tyname(ty)
                            ),
                        ));
                    }
                    if *op != "=" && known.is_none() {
                        return Err(DError::at(
                            *pos,
                            format!("this->{name} is read before it is assigned"),
                        ));
                    }
                    local.this.insert(name.clone(), v.ty);
                    let _ = writeln!(body, "\t{var} = {};", v.text);
                    return Ok(());
                }
                let (map, keyed) = self.variable(target, ctx, local, Some(v.ty))?;
                let zero = matches!(value.kind, ExprKind::Int(0)) && *op == "=";
                if zero && keyed {
                    // D frees a dynamic variable assigned zero; reading it again gives 0.
                    let _ = writeln!(body, "\tdelete({map});");
                } else {
                    let _ = writeln!(body, "\t{map} = {};", v.text);
                }
                Ok(())
            }
            Stmt::Aggregate(agg) => self.aggregate(agg, ctx, local, body),
            Stmt::Expr(e) => Err(DError::at(
                e.pos,
                match &e.kind {
                    ExprKind::Call(f, _) => format!(
                        "`{f}()` is not supported: this D subset aggregates (count, sum, avg, min, \
                         max, quantize, lquantize, llquantize) and assigns variables"
                    ),
                    _ => "this expression is not a statement: assign it or aggregate it".into(),
                },
            )),
        }
    }

    /// A global or thread-local variable as a bpftrace map; `assigned` is the type stored
    /// when the variable is written, `None` when it is read. Also says whether it is keyed.
    fn variable(
        &mut self,
        e: &Expr,
        ctx: &ProbeCtx,
        local: &mut Local,
        assigned: Option<Ty>,
    ) -> Result<(String, bool), DError> {
        let (scope, name, keys) = match &e.kind {
            ExprKind::Var { scope, name, keys } => (*scope, name, keys.as_deref()),
            ExprKind::Ident(name) => (Scope::Global, name, None),
            _ => {
                return Err(DError::at(
                    e.pos,
                    "only variables (`x`, `x[k]`, `self->x`, `this->x`) can be assigned",
                ))
            }
        };
        let thread = scope == Scope::Thread;
        let mut parts: Vec<String> = Vec::new();
        if thread {
            parts.push(thread_key(ctx));
        }
        let mut key_types = Vec::new();
        for k in keys.unwrap_or_default() {
            let tr = self.expr(k, ctx, local)?;
            key_types.push(tr.ty);
            parts.push(tr.text);
        }
        let shown = if thread {
            format!("self->{name}")
        } else {
            name.clone()
        };
        let entry = self.vars.entry((thread, name.clone()));
        let info = entry.or_insert_with(|| VarInfo {
            ty: assigned.unwrap_or(Ty::Int),
            keys: keys.map(|_| key_types.clone()),
            pos: e.pos,
        });
        let same_keys = match (&info.keys, keys) {
            (None, None) => true,
            (Some(known), Some(_)) => {
                known.len() == key_types.len()
                    && known.iter().zip(&key_types).all(|(a, b)| a.compatible(*b))
            }
            _ => false,
        };
        if !same_keys {
            return Err(DError::at(
                e.pos,
                format!(
                    "{shown} is used with different keys here than at line {}, column {}",
                    info.pos.line, info.pos.col
                ),
            ));
        }
        if let Some(ty) = assigned {
            // Once a variable holds an unsigned value (a timestamp) it reads as unsigned, as
            // its D declaration (from the first assignment) would say.
            if ty == Ty::UInt && info.ty == Ty::Int {
                info.ty = Ty::UInt;
            }
            if !ty.compatible(info.ty) {
                return Err(DError::at(
                    e.pos,
                    format!(
                        "{shown} is assigned a {} here but a {} at line {}, column {}",
                        tyname(ty),
                        tyname(info.ty),
                        info.pos.line,
                        info.pos.col
                    ),
                ));
            }
        }
        let prefix = if thread { "self" } else { "g" };
        let map = if parts.is_empty() {
            format!("@__{prefix}_{name}")
        } else {
            format!("@__{prefix}_{name}[{}]", parts.join(", "))
        };
        Ok((map, !parts.is_empty()))
    }

    fn aggregate(
        &mut self,
        agg: &Aggregate,
        ctx: &ProbeCtx,
        local: &mut Local,
        body: &mut String,
    ) -> Result<(), DError> {
        let (name, keys, function, args) = (&agg.name, &agg.keys, agg.function.as_str(), &agg.args);
        let (pos, fpos) = (agg.pos, agg.function_pos);
        if name.starts_with("@__") {
            return Err(DError::at(
                pos,
                "aggregation names starting with `@__` are reserved",
            ));
        }
        let mut key_text = Vec::new();
        let mut key_types = Vec::new();
        for k in keys {
            let tr = self.expr(k, ctx, local)?;
            key_types.push(tr.ty);
            key_text.push(tr.text);
        }
        let arity = |n: usize, sig: &str| -> Result<(), DError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(DError::at(
                    fpos,
                    format!("{sig} takes {n} argument(s), got {}", args.len()),
                ))
            }
        };
        let mut value = |t: &mut Translator, i: usize| -> Result<String, DError> {
            let tr = t.expr(&args[i], ctx, local)?;
            if tr.ty == Ty::Str {
                return Err(DError::at(
                    args[i].pos,
                    format!("{function}() aggregates numbers, not strings"),
                ));
            }
            Ok(tr.text)
        };
        let mut prelude = String::new();
        let (kind, call, layout, relabel, signature) = match function {
            "count" => {
                arity(0, "count()")?;
                (AggKind::Count, "count()".to_owned(), None, Relabel::None, "count()".to_owned())
            }
            "max" => {
                arity(1, "max()")?;
                let v = value(self, 0)?;
                // bpftrace 0.17's max() loses all-negative maxima (it prints nothing); its
                // min() does not, and max(x) = -min(-x).
                (AggKind::Max, format!("min(-({v}))"), None, Relabel::Negate, "max()".to_owned())
            }
            "sum" | "avg" | "min" => {
                arity(1, &format!("{function}()"))?;
                let v = value(self, 0)?;
                let kind = AggKind::from_bpftrace(function).expect("bpftrace has these three");
                (kind, format!("{function}({v})"), None, Relabel::None, format!("{function}()"))
            }
            "quantize" => {
                if args.len() == 2 {
                    return Err(DError::at(args[1].pos, "quantize() increments (argument #2) are not supported"));
                }
                arity(1, "quantize()")?;
                let v = value(self, 0)?;
                let s = self.scratch_var();
                let _ = writeln!(prelude, "\t{s} = (int64)({v});");
                // bpftrace 0.17's hist() has no negative buckets and one bucket for everything
                // from 2^31 up: aggregate DTrace's own bucket index instead.
                let index = quantize_index(&s, self.scratch_var(), self.scratch_var(), &mut prelude);
                let table = buckets::quantize_table();
                (
                    AggKind::Quantize,
                    format!("lhist({index}, 0, {}, 1)", table.len()),
                    None,
                    Relabel::Table(table),
                    "quantize()".to_owned(),
                )
            }
            "lquantize" => {
                if args.len() == 5 {
                    return Err(DError::at(args[4].pos, "lquantize() increments (argument #5) are not supported"));
                }
                if args.len() != 3 && args.len() != 4 {
                    return Err(DError::at(fpos, format!("lquantize() takes 3 or 4 arguments, got {}", args.len())));
                }
                let base = constant(&args[1], "lquantize() base (argument #2)")?;
                let limit = constant(&args[2], "lquantize() limit (argument #3)")?;
                let step = match args.get(3) {
                    Some(a) => constant(a, "lquantize() step (argument #4)")?,
                    None => 1,
                };
                if i32::try_from(base).is_err() {
                    return Err(DError::at(args[1].pos, "lquantize() base (argument #2) must fit in 32 bits"));
                }
                if step <= 0 || step > i64::from(u16::MAX) {
                    return Err(DError::at(fpos, "lquantize() step (argument #4) must be between 1 and 65535"));
                }
                if limit <= base {
                    return Err(DError::at(args[2].pos, "lquantize() limit (argument #3) must be greater than the base (argument #2)"));
                }
                let levels = (limit - base) / step;
                if levels == 0 {
                    return Err(DError::at(fpos, "lquantize() step (argument #4) is larger than limit - base"));
                }
                let v = value(self, 0)?;
                let top = base + levels * step;
                let layout = Some(Layout { min: base, max: top, step });
                let signature = format!("lquantize({base}, {limit}, {step})");
                if base >= 0 {
                    if levels > LHIST_MAX_BUCKETS {
                        return Err(DError::at(fpos, format!("lquantize() with {levels} levels: bpftrace 0.17 allows at most {LHIST_MAX_BUCKETS}")));
                    }
                    (AggKind::Lquantize, format!("lhist({v}, {base}, {top}, {step})"), layout, Relabel::Lquantize { base, levels, step }, signature)
                } else {
                    // lhist() refuses a negative minimum: aggregate DTrace's bucket index.
                    if levels + 2 > LHIST_MAX_BUCKETS {
                        return Err(DError::at(fpos, format!("lquantize() with {levels} levels: bpftrace 0.17 allows at most {}", LHIST_MAX_BUCKETS - 2)));
                    }
                    let s = self.scratch_var();
                    let _ = writeln!(prelude, "\t{s} = (int64)({v});");
                    let index = format!(
                        "({s} < {base} ? 0 : ({s} >= {top} ? {} : ({s} - {base}) / {step} + 1))",
                        levels + 1
                    );
                    let table = buckets::lquantize_table(base, levels, step);
                    (AggKind::Lquantize, format!("lhist({index}, 0, {}, 1)", table.len()), layout, Relabel::Table(table), signature)
                }
            }
            "llquantize" => {
                arity(5, "llquantize()")?;
                let factor = constant(&args[1], "llquantize() factor (argument #2)")?;
                let low = constant(&args[2], "llquantize() low magnitude (argument #3)")?;
                let high = constant(&args[3], "llquantize() high magnitude (argument #4)")?;
                let nsteps = constant(&args[4], "llquantize() steps (argument #5)")?;
                if let Some(why) = buckets::llquantize_check(factor, low, high, nsteps) {
                    return Err(DError::at(fpos, why));
                }
                let table = buckets::llquantize_table(factor, low as u32, high as u32, nsteps);
                if table.len() as i64 > LHIST_MAX_BUCKETS {
                    return Err(DError::at(fpos, format!("llquantize() with {} buckets: bpftrace 0.17 allows at most {LHIST_MAX_BUCKETS}", table.len())));
                }
                let v = value(self, 0)?;
                let s = self.scratch_var();
                let _ = writeln!(prelude, "\t{s} = (int64)({v});");
                let index = llquantize_index(&s, factor, low as u32, high as u32, nsteps);
                let signature = format!("llquantize({factor}, {low}, {high}, {nsteps})");
                (AggKind::Llquantize, format!("lhist({index}, 0, {}, 1)", table.len()), None, Relabel::Table(table), signature)
            }
            "stddev" => return Err(DError::at(fpos, "stddev() has no bpftrace 0.17 equivalent")),
            other => {
                return Err(DError::at(
                    fpos,
                    format!("`{other}()` is not an aggregating function of this D subset (count, sum, avg, min, max, quantize, lquantize, llquantize)"),
                ))
            }
        };
        let syscall_keys: Vec<usize> = key_types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == Ty::Syscall)
            .map(|(i, _)| i)
            .collect();
        match self.aggs.iter_mut().find(|(n, _)| n == name) {
            Some((_, known)) => {
                let same_keys = known.keys.len() == key_types.len()
                    && known
                        .keys
                        .iter()
                        .zip(&key_types)
                        .all(|(a, b)| a.compatible(*b));
                if known.signature != signature || !same_keys {
                    return Err(DError::at(
                        pos,
                        format!(
                            "{name} is {signature} with {} key(s) here but {} with {} key(s) at line {}, column {}",
                            key_types.len(), known.signature, known.keys.len(), known.pos.line, known.pos.col
                        ),
                    ));
                }
                for i in syscall_keys {
                    if !known.plan.syscall_keys.contains(&i) {
                        known.plan.syscall_keys.push(i);
                    }
                }
            }
            None => self.aggs.push((
                name.to_owned(),
                AggInfo {
                    signature,
                    keys: key_types,
                    pos,
                    plan: AggPlan {
                        name: name.to_owned(),
                        kind,
                        layout,
                        syscall_keys,
                        relabel,
                    },
                },
            )),
        }
        body.push_str(&prelude);
        let target = if key_text.is_empty() {
            name.to_owned()
        } else {
            format!("{name}[{}]", key_text.join(", "))
        };
        let _ = writeln!(body, "\t{target} = {call};");
        Ok(())
    }

    fn scratch_var(&mut self) -> String {
        self.scratch += 1;
        format!("$__v{}", self.scratch)
    }

    fn expr(&mut self, e: &Expr, ctx: &ProbeCtx, local: &mut Local) -> Result<Tr, DError> {
        let tr = |text: String, ty| Ok(Tr { text, ty });
        match &e.kind {
            ExprKind::Int(n) => tr(n.to_string(), Ty::Int),
            ExprKind::Str(s) => tr(format!("\"{}\"", escape(s)), Ty::Str),
            ExprKind::Ident(name) => self.builtin(name, e.pos, ctx),
            ExprKind::Var {
                scope: Scope::Clause,
                name,
                keys,
            } => {
                if keys.is_some() {
                    return Err(DError::at(
                        e.pos,
                        "clause-local (`this->`) associative arrays are not supported",
                    ));
                }
                match local.this.get(name) {
                    Some(ty) => tr(format!("$this_{name}"), *ty),
                    None => Err(DError::at(
                        e.pos,
                        format!("this->{name} is read before it is assigned in this clause"),
                    )),
                }
            }
            ExprKind::Var { scope, name, .. } => {
                if *scope == Scope::Global && !self.globals.contains(name) {
                    return Err(DError::at(e.pos, format!("`{name}` is never assigned")));
                }
                let (map, _) = self.variable(e, ctx, local, None)?;
                let ty = self.vars[&(*scope == Scope::Thread, name.clone())].ty;
                tr(map, ty)
            }
            ExprKind::Args { index, member } => {
                let found = ctx
                    .args
                    .iter()
                    .find(|(i, m, ..)| i == index && m.as_deref() == member.as_deref());
                match found {
                    Some((_, _, text, ty)) => tr((*text).to_owned(), *ty),
                    None => {
                        let what = match member {
                            Some(m) => format!("args[{index}]->{m}"),
                            None => format!("args[{index}]"),
                        };
                        Err(DError::at(
                            e.pos,
                            format!("{what} is not available in {}:::{}", ctx.provider, ctx.name),
                        ))
                    }
                }
            }
            ExprKind::AggRef { name, .. } => Err(DError::at(
                e.pos,
                format!("aggregation {name} cannot be read, only aggregated"),
            )),
            ExprKind::Call(name, _) => Err(DError::at(
                e.pos,
                format!("`{name}()` is not supported in expressions"),
            )),
            ExprKind::Unary(op, inner) => {
                let v = self.expr(inner, ctx, local)?;
                if v.ty == Ty::Str {
                    return Err(DError::at(
                        e.pos,
                        format!("unary `{op}` needs a number, not a string"),
                    ));
                }
                let ty = if v.ty == Ty::UInt && *op != "!" {
                    Ty::UInt
                } else {
                    Ty::Int
                };
                tr(format!("{op}({})", v.text), ty)
            }
            ExprKind::Ternary(c, a, b) => {
                let c = self.expr(c, ctx, local)?;
                let a_pos = a.pos;
                let (a, b) = (self.expr(a, ctx, local)?, self.expr(b, ctx, local)?);
                if c.ty == Ty::Str {
                    return Err(DError::at(e.pos, "the condition of `?:` must be a number"));
                }
                if !a.ty.compatible(b.ty) {
                    return Err(DError::at(
                        a_pos,
                        "both branches of `?:` must be numbers or both strings",
                    ));
                }
                let ty = if b.ty == Ty::UInt { b.ty } else { a.ty };
                tr(format!("({} ? {} : {})", c.text, a.text, b.text), ty)
            }
            ExprKind::Binary(op, l, r) => self.binary(op, l, r, e.pos, ctx, local),
        }
    }

    fn binary(
        &mut self,
        op: &str,
        l: &Expr,
        r: &Expr,
        pos: Pos,
        ctx: &ProbeCtx,
        local: &mut Local,
    ) -> Result<Tr, DError> {
        // `probefunc == "read"` when probefunc is a syscall number: compare numbers.
        if matches!(op, "==" | "!=") {
            for (a, b) in [(l, r), (r, l)] {
                if let ExprKind::Str(name) = &b.kind {
                    let side = self.expr(a, ctx, local)?;
                    if side.ty == Ty::Syscall {
                        let nr = crate::syscalls::number(name).ok_or_else(|| {
                            DError::at(b.pos, format!("no syscall named \"{name}\" on this system"))
                        })?;
                        return Ok(Tr {
                            text: format!("({} {op} {nr})", side.text),
                            ty: Ty::Int,
                        });
                    }
                }
            }
        }
        let (a, b) = (self.expr(l, ctx, local)?, self.expr(r, ctx, local)?);
        let strings = a.ty == Ty::Str || b.ty == Ty::Str;
        if strings {
            if !matches!(op, "==" | "!=") {
                return Err(DError::at(
                    pos,
                    format!("`{op}` needs numbers; strings can only be compared with == and !="),
                ));
            }
            if a.ty != b.ty {
                return Err(DError::at(
                    pos,
                    "a string can only be compared with a string",
                ));
            }
        }
        let unsigned = a.ty == Ty::UInt || (b.ty == Ty::UInt && op != ">>");
        let (x, y) = (&a.text, &b.text);
        let natural = matches!(r.kind, ExprKind::Int(n) if n >= 0);
        // bpftrace 0.17 divides, takes remainders and shifts as unsigned whatever the operands;
        // D (as C) does so only for unsigned operands. Signed ones get C's meaning spelled out.
        let text = match op {
            "^^" => format!("(({x}) != 0) != (({y}) != 0)"),
            "/" | "%" | ">>" if unsigned => format!("({x} {op} {y})"),
            "/" if natural => format!("({x} < 0 ? -((-({x})) / {y}) : {x} / {y})"),
            "/" => {
                let (ax, ay) = (abs(x), abs(y));
                format!("(({x} < 0) == ({y} < 0) ? {ax} / {ay} : -({ax} / {ay}))")
            }
            "%" => {
                let ay = if natural { y.clone() } else { abs(y) };
                format!("({x} < 0 ? -({} % {ay}) : {x} % {ay})", abs(x))
            }
            ">>" => format!("({x} < 0 ? ~(~({x}) >> {y}) : {x} >> {y})"),
            _ => format!("({x} {op} {y})"),
        };
        let arithmetic = !matches!(
            op,
            "==" | "!=" | "<" | "<=" | ">" | ">=" | "&&" | "||" | "^^"
        );
        let ty = if arithmetic && unsigned {
            Ty::UInt
        } else {
            Ty::Int
        };
        Ok(Tr { text, ty })
    }

    fn builtin(&mut self, name: &str, pos: Pos, ctx: &ProbeCtx) -> Result<Tr, DError> {
        let int = |text: &str| {
            Ok(Tr {
                text: text.to_owned(),
                ty: Ty::Int,
            })
        };
        let unsigned = |text: &str| {
            Ok(Tr {
                text: text.to_owned(),
                ty: Ty::UInt,
            })
        };
        let process = |text: &str| match ctx.no_process {
            Some(why) => Err(DError::at(
                pos,
                format!("`{name}` is not available here: {why}"),
            )),
            None => int(text),
        };
        match name {
            "timestamp" => unsigned("nsecs"),
            "vtimestamp" => {
                self.note(
                    "vtimestamp (the thread's on-CPU time) is approximated by timestamp: Linux \
                     bpftrace has no per-thread on-CPU clock, so latencies include time the \
                     thread spent blocked or preempted"
                        .into(),
                );
                unsigned("nsecs")
            }
            "walltimestamp" => {
                let offset = *self.wall_offset.get_or_insert_with(wall_clock_offset);
                self.note(
                    "walltimestamp is the monotonic clock plus the wall-clock offset measured \
                     when the script was translated (to about 10 ms; later clock steps are not \
                     followed)"
                        .into(),
                );
                unsigned(&format!("(nsecs + {offset})"))
            }
            // D's ids are signed ints; bpftrace's are unsigned, which would make `cpu - 2`
            // a large number.
            "tid" => int(&format!("(int64){}", ctx.tid)),
            "pid" => process("(int64)pid"),
            "ppid" => process("(int64)curtask->real_parent->tgid"),
            "uid" => process("(int64)uid"),
            "cpu" => int("(int64)cpu"),
            "execname" => Ok(Tr {
                text: ctx.execname.unwrap_or("comm").to_owned(),
                ty: Ty::Str,
            }),
            "probefunc" => Ok(Tr {
                text: match ctx.func.1 {
                    Ty::Str => format!("\"{}\"", ctx.func.0),
                    _ => ctx.func.0.clone(),
                },
                ty: ctx.func.1,
            }),
            "probename" => Ok(Tr {
                text: format!("\"{}\"", ctx.name),
                ty: Ty::Str,
            }),
            "probeprov" => Ok(Tr {
                text: format!("\"{}\"", ctx.provider),
                ty: Ty::Str,
            }),
            _ => {
                if let Some(n) = name.strip_prefix("arg").and_then(|n| n.parse::<i64>().ok()) {
                    return match ctx.args.iter().find(|(i, m, ..)| *i == n && m.is_none()) {
                        Some((_, _, text, ty)) => Ok(Tr {
                            text: (*text).to_owned(),
                            ty: *ty,
                        }),
                        None => Err(DError::at(
                            pos,
                            format!(
                                "`{name}` is not available in {}:::{}",
                                ctx.provider, ctx.name
                            ),
                        )),
                    };
                }
                if self.globals.iter().any(|g| g == name) {
                    let map = format!("@__g_{name}");
                    let ty = self
                        .vars
                        .get(&(false, name.to_owned()))
                        .map_or(Ty::Int, |v| v.ty);
                    return Ok(Tr { text: map, ty });
                }
                Err(DError::at(
                    pos,
                    format!("`{name}` is not a supported builtin or an assigned variable"),
                ))
            }
        }
    }
}

/// `|x|` for a signed value.
fn abs(x: &str) -> String {
    format!("({x} < 0 ? -({x}) : {x})")
}

/// The value of a constant integer argument.
fn constant(e: &Expr, what: &str) -> Result<i64, DError> {
    match &e.kind {
        ExprKind::Int(n) => Ok(*n),
        _ => Err(DError::at(
            e.pos,
            format!("{what} must be an integer constant"),
        )),
    }
}

/// The map key standing for "this thread" in `self->` variables. Every CPU's idle thread has
/// tid 0, so where a probe can fire in one (sched, profile, io completions) the CPU is part of
/// the key: otherwise one CPU's idle thread reads another's `self->ts`.
fn thread_key(ctx: &ProbeCtx) -> String {
    let tid = ctx.tid;
    if ctx.provider == "syscall" {
        return tid.to_owned();
    }
    format!("(int64){tid} + ({tid} == 0 ? ((int64)cpu + 1) << 32 : 0)")
}

/// Writes the statements computing `floor(log2(|v|))` of scratch variable `v` into `prelude`
/// (bpftrace 0.17 has no log2 of a 64-bit value) and returns the expression of `v`'s index in
/// [`buckets::quantize_table`]. Magnitudes are capped at 2^62, DTrace's outermost buckets.
fn quantize_index(v: &str, magnitude: String, log2: String, prelude: &mut String) -> String {
    const CAP: i64 = 1 << 62;
    let (m, k) = (magnitude, log2);
    let _ = writeln!(
        prelude,
        "\t{m} = {v} < 0 ? ({v} <= -{CAP} ? {CAP} : -{v}) : ({v} >= {CAP} ? {CAP} : {v});\n\t{k} = 0;"
    );
    for shift in [32, 16, 8, 4, 2, 1] {
        let _ = writeln!(
            prelude,
            "\tif ({m} >= {}) {{ {k} = {k} + {shift}; {m} = {m} >> {shift}; }}",
            1i64 << shift
        );
    }
    let zero = buckets::QUANTIZE_ZERO_INDEX;
    format!(
        "({v} == 0 ? {zero} : ({v} > 0 ? {} + {k} : {} - {k}))",
        zero + 1,
        zero - 1
    )
}

/// The bpftrace expression computing the llquantize bucket index of scratch variable `v`.
fn llquantize_index(v: &str, factor: i64, low: u32, high: u32, nsteps: i64) -> String {
    let mut this = factor.pow(low);
    let mut expr = format!("({v} < {this} ? 0 : ");
    let mut base = 1;
    let mut closing = 1;
    for _ in low..=high {
        let next = this * factor;
        let buckets = nsteps.min(next);
        let width = next / buckets;
        let _ = write!(expr, "({v} < {next} ? {base} + ({v} - {this}) / {width} : ");
        closing += 1;
        base += buckets - buckets / factor;
        this = next;
    }
    let _ = write!(expr, "{base}");
    expr.push_str(&")".repeat(closing));
    expr
}

/// Nanoseconds from CLOCK_MONOTONIC (bpftrace's `nsecs`) to the Unix epoch, from
/// `/proc/uptime` (10 ms resolution), which is monotonic time on hosts that do not suspend.
fn wall_clock_offset() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|u| u.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    now - (uptime * 1e9) as i64
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

fn tyname(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "string",
        _ => "number",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parser::parse, SEED};
    use super::*;

    fn tr(src: &str) -> Output {
        translate(&parse(src).unwrap()).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn err(src: &str) -> DError {
        match translate(&parse(src).unwrap()) {
            Ok(o) => panic!("{src} translated:\n{}", o.bpftrace),
            Err(e) => e,
        }
    }

    #[test]
    fn the_seed_becomes_raw_syscalls_with_thread_maps() {
        let out = tr(SEED);
        let expected = "tracepoint:raw_syscalls:sys_enter\n{\n\t@__self_syscall_entry_ts[tid, args->id] = nsecs;\n}\n\n\
            tracepoint:raw_syscalls:sys_exit\n/(@__self_syscall_entry_ts[tid, args->id])/\n{\n\
            \t@time[args->id] = lhist(((nsecs - @__self_syscall_entry_ts[tid, args->id]) / 1000), 0, 62, 2);\n\
            \tdelete(@__self_syscall_entry_ts[tid, args->id]);\n}\n\n";
        assert_eq!(out.bpftrace, expected);
        assert!(out.notes.iter().any(|n| n.contains("vtimestamp")));
        let plan = &out.rewrite.plans[0];
        assert_eq!(plan.name, "@time");
        assert_eq!(plan.kind, AggKind::Lquantize);
        assert_eq!(plan.syscall_keys, vec![0]);
        assert_eq!(
            plan.layout,
            Some(Layout {
                min: 0,
                max: 62,
                step: 2
            })
        );
    }

    #[test]
    fn quantize_aggregates_dtraces_bucket_index() {
        let out = tr("syscall::read:return { @bytes[execname] = quantize(arg0); }");
        let p = &out.bpftrace;
        assert!(p.contains("$__v1 = (int64)(args->ret);"), "{p}");
        assert!(
            p.contains("if ($__v2 >= 4294967296) { $__v3 = $__v3 + 32; $__v2 = $__v2 >> 32; }"),
            "{p}"
        );
        assert!(
            p.contains("@bytes[comm] = lhist(($__v1 == 0 ? 63 : ($__v1 > 0 ? 64 + $__v3 : 62 - $__v3)), 0, 127, 1);"),
            "{p}"
        );
        assert_eq!(
            out.rewrite.plans[0].relabel,
            Relabel::Table(buckets::quantize_table())
        );
    }

    #[test]
    fn llquantize_index_matches_the_bucket_table() {
        for (factor, low, high, nsteps) in
            [(10, 0, 2, 10), (2, 0, 3, 4), (10, 1, 3, 20), (3, 3, 5, 27)]
        {
            let table = buckets::llquantize_table(factor, low, high, nsteps);
            let index = llquantize_index("v", factor, low, high, nsteps);
            for v in [
                -5i64, 0, 1, 2, 3, 7, 9, 10, 11, 99, 100, 150, 999, 1000, 5000, 10_000_000,
            ] {
                let i = eval_index(&index, v);
                let (lo, hi) = table[i];
                assert!(
                    lo.is_none_or(|lo| lo <= v) && hi.is_none_or(|hi| v <= hi),
                    "{v} in {:?} ({index})",
                    table[i]
                );
            }
        }
    }

    /// Evaluates the generated ternary chain by walking its text: a tiny interpreter for
    /// exactly the shape `llquantize_index` emits.
    fn eval_index(expr: &str, v: i64) -> usize {
        let body = expr.replace('v', &v.to_string());
        let mut rest = body.as_str();
        loop {
            rest = rest.trim_start_matches('(');
            let Some((cond, after)) = rest.split_once(" ? ") else {
                return rest.trim_end_matches(')').trim().parse().unwrap();
            };
            let (x, bound) = cond.split_once(" < ").unwrap();
            let (x, bound): (i64, i64) = (x.trim().parse().unwrap(), bound.trim().parse().unwrap());
            let (then, otherwise) = after.split_once(" : ").unwrap();
            if x < bound {
                // `base + (v - this) / width` or a constant.
                let parts: Vec<&str> = then
                    .split(['+', '(', ')', '/', '-'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                return match parts.as_slice() {
                    [c] => c.parse().unwrap(),
                    [base, val, this, width] => {
                        let (b, x, t, w): (i64, i64, i64, i64) = (
                            base.parse().unwrap(),
                            val.parse().unwrap(),
                            this.parse().unwrap(),
                            width.parse().unwrap(),
                        );
                        (b + (x - t) / w) as usize
                    }
                    other => panic!("{other:?}"),
                };
            }
            rest = otherwise;
        }
    }

    #[test]
    fn negative_lquantize_bases_aggregate_the_bucket_index() {
        let out = tr("tick-1s { @ = lquantize(-3, -10, 10, 5); }");
        assert!(
            out.bpftrace.contains(
                "lhist(($__v1 < -10 ? 0 : ($__v1 >= 10 ? 5 : ($__v1 - -10) / 5 + 1)), 0, 6, 1)"
            ),
            "{}",
            out.bpftrace
        );
        assert!(matches!(&out.rewrite.plans[0].relabel, Relabel::Table(t) if t.len() == 6));
    }

    #[test]
    fn signed_division_is_spelled_out_and_unsigned_division_is_not() {
        let out = tr(
            "syscall::read:return { @a = sum(arg0 / 4); @b = sum(timestamp / 4); \
                      this->t = timestamp; @c = sum(this->t >> 2); x = 7; x %= 2; }",
        );
        let b = &out.bpftrace;
        assert!(
            b.contains("@a = sum((args->ret < 0 ? -((-(args->ret)) / 4) : args->ret / 4));"),
            "{b}"
        );
        assert!(b.contains("@b = sum((nsecs / 4));"), "{b}");
        assert!(b.contains("@c = sum(($this_t >> 2));"), "{b}");
        assert!(
            b.contains(
                "@__g_x = (@__g_x < 0 ? -((@__g_x < 0 ? -(@__g_x) : @__g_x) % 2) : @__g_x % 2);"
            ),
            "{b}"
        );
    }

    #[test]
    fn probefunc_compares_by_syscall_number() {
        let out = tr("syscall:::entry /probefunc == \"getppid\"/ { @ = count(); }");
        let nr = crate::syscalls::number("getppid").unwrap();
        assert!(
            out.bpftrace.contains(&format!("((args->id == {nr}))")),
            "{}",
            out.bpftrace
        );
    }

    #[test]
    fn on_cpu_keys_thread_variables_by_the_next_thread() {
        let out = tr("sched:::off-cpu { self->ts = timestamp; } sched:::on-cpu /self->ts/ { @[execname] = quantize(timestamp - self->ts); self->ts = 0; }");
        assert!(out
            .bpftrace
            .contains("@__self_ts[(int64)tid + (tid == 0 ? ((int64)cpu + 1) << 32 : 0)] = nsecs;"));
        assert!(out.bpftrace.contains(
            "/(@__self_ts[(int64)args->next_pid + (args->next_pid == 0 ? ((int64)cpu + 1) << 32 : 0)])/"
        ));
        assert!(out.bpftrace.contains("@[args->next_comm] = lhist("));
    }

    #[test]
    fn refusals_name_the_construct_and_position() {
        let cases = [
            (
                "BEGIN { printf(\"%d\", 1); }",
                (1, 9),
                "`printf()` is not supported",
            ),
            ("BEGIN {\n  @a = stddev(1);\n}", (2, 8), "stddev"),
            ("BEGIN { @a = quantize(1, 2); }", (1, 26), "increments"),
            (
                "BEGIN { @a = lquantize(1, 0, 10, x); }",
                (1, 34),
                "integer constant",
            ),
            (
                "BEGIN { @a = lquantize(1, 10, 0, 1); }",
                (1, 31),
                "greater than the base",
            ),
            (
                "BEGIN { @a = llquantize(1, 10, 0, 6, 15); }",
                (1, 14),
                "evenly divide",
            ),
            (
                "BEGIN { x = y; }",
                (1, 13),
                "`y` is not a supported builtin",
            ),
            (
                "BEGIN { @a = count(); }\nEND { @a = sum(1); }",
                (2, 7),
                "@a is sum()",
            ),
            (
                "BEGIN { @a[1] = count(); @a[\"x\"] = count(); }",
                (1, 26),
                "@a is count()",
            ),
            ("BEGIN { x = execname + 1; }", (1, 13), "`+` needs numbers"),
            (
                "BEGIN { x = arg0; }",
                (1, 13),
                "`arg0` is not available in dtrace:::BEGIN",
            ),
            (
                "sched:::on-cpu { @[pid] = count(); }",
                (1, 20),
                "`pid` is not available",
            ),
            (
                "BEGIN { this->x = this->y; }",
                (1, 19),
                "this->y is read before",
            ),
            (
                "BEGIN { @[x] = count(); }",
                (1, 11),
                "`x` is not a supported builtin",
            ),
            (
                "syscall:::entry /probefunc == \"nope\"/ { @ = count(); }",
                (1, 31),
                "no syscall named",
            ),
            (
                "BEGIN { self->a[1] = 1; self->a[\"s\"] = 2; }",
                (1, 25),
                "different keys",
            ),
            (
                "io:::start { @ = sum(args[1]->dev_statname); }",
                (1, 22),
                "args[1]->dev_statname is not available",
            ),
        ];
        for (src, (line, col), text) in cases {
            let e = err(src);
            assert_eq!((e.line, e.column), (line, col), "{src}: {e}");
            assert!(e.message.contains(text), "{src}: {e}");
        }
    }
}
