//! The parser: a hand-written recursive-descent reader over [`super::lex`] tokens that builds a
//! [`Graph`] with `add_typed`, so declared types are kept as written for the verifier to judge.
//!
//! What the parser itself enforces is only what the text must say to mean a graph: known ops,
//! every attribute of an op exactly once with a value of the right kind, well-formed types, each
//! `%N` defined once and before any use, distinct output names. Arity, dtypes and shapes are the
//! verifier's business. The parser never panics and has no recursion, so hostile input can only
//! produce an `IrError::Parse` with the line and column of the offending token.

use std::collections::{HashMap, HashSet};

use super::attrs::{self, build_op, spec, Kind, Val};
use super::lex::{lex, Located, Tok, Token};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};

/// Parses the text form; errors name `path`.
pub fn parse_named(src: &str, path: &str) -> Result<Graph, IrError> {
    let to_err = |e: Located| IrError::Parse {
        path: path.to_string(),
        line: e.line,
        col: e.col,
        msg: e.msg,
    };
    let toks = lex(src).map_err(to_err)?;
    let defined = defined_ids(&toks);
    let mut p = Parser {
        toks,
        pos: 0,
        g: Graph::default(),
        values: HashMap::new(),
        defined,
    };
    p.file().map_err(to_err)?;
    Ok(p.g)
}

/// Every `%N` that appears as `%N =` anywhere, so a use before the definition can be told
/// apart from a value that is never defined.
fn defined_ids(toks: &[Token]) -> HashSet<usize> {
    toks.windows(3)
        .filter_map(|w| match (&w[0].tok, &w[1].tok, &w[2].tok) {
            (Tok::Punct('%'), Tok::Word(n), Tok::Punct('=')) => n.parse().ok(),
            _ => None,
        })
        .collect()
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    g: Graph,
    /// Text id → node and the line it was defined on.
    values: HashMap<usize, (NodeId, usize)>,
    defined: HashSet<usize>,
}

type R<T> = Result<T, Located>;

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends with `Eof` and `next` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn at(t: &Token, msg: impl Into<String>) -> Located {
        Located {
            line: t.line,
            col: t.col,
            msg: msg.into(),
        }
    }

    fn expected(t: &Token, what: &str) -> Located {
        Self::at(t, format!("expected {what}, found {}", t.tok))
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn punct(&mut self, c: char) -> R<Token> {
        let t = self.next();
        if t.tok == Tok::Punct(c) {
            Ok(t)
        } else {
            Err(Self::expected(&t, &format!("`{c}`")))
        }
    }

    fn keyword(&mut self, kw: &str) -> R<()> {
        let t = self.next();
        match &t.tok {
            Tok::Word(w) if w == kw => Ok(()),
            _ => Err(Self::expected(&t, &format!("`{kw}`"))),
        }
    }

    fn word(&mut self, what: &str) -> R<(String, Token)> {
        let t = self.next();
        match &t.tok {
            Tok::Word(w) => Ok((w.clone(), t)),
            _ => Err(Self::expected(&t, what)),
        }
    }

    fn string(&mut self, what: &str) -> R<String> {
        let t = self.next();
        match t.tok {
            Tok::Str(s) => Ok(s),
            _ => Err(Self::expected(&t, what)),
        }
    }

    /// A non-negative decimal integer.
    fn int(&mut self, what: &str) -> R<(usize, Token)> {
        let (w, t) = self.word(what)?;
        match attrs::digits(&w) {
            None => Err(Self::expected(&t, what)),
            Some(v) => Ok((v.map_err(|m| Self::at(&t, m))?, t)),
        }
    }

    /// True when the next token is the word `w`.
    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    /// `true` or `false`.
    fn boolean(&mut self) -> R<bool> {
        let (w, t) = self.word(Kind::Bool.expected())?;
        match w.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Self::expected(&t, Kind::Bool.expected())),
        }
    }

    /// `[w, w, ...]` (possibly empty), each word read by `item`.
    fn word_list<T>(&mut self, what: &str, item: fn(&str) -> Result<T, String>) -> R<Vec<T>> {
        self.punct('[')?;
        let mut v = Vec::new();
        if self.is_punct(']') {
            self.next();
            return Ok(v);
        }
        loop {
            let (w, t) = self.word(what)?;
            v.push(item(&w).map_err(|m| Self::at(&t, m))?);
            let t = self.next();
            match t.tok {
                Tok::Punct(',') => {}
                Tok::Punct(']') => return Ok(v),
                _ => return Err(Self::expected(&t, "`,` or `]`")),
            }
        }
    }

    /// One attribute value of kind `k`.
    fn attr_value(&mut self, k: Kind) -> R<Val> {
        let none = |p: &mut Self| {
            let yes = p.is_word("none");
            if yes {
                p.next();
            }
            yes
        };
        Ok(match k {
            Kind::Int => Val::Int(self.int(k.expected())?.0),
            Kind::Float => Val::Float(self.float(k.expected())?),
            Kind::Triple => Val::Triple(self.triple()?),
            Kind::Bool => Val::Bool(self.boolean()?),
            Kind::OptInt if none(self) => Val::OptInt(None),
            Kind::OptInt => Val::OptInt(Some(self.int(k.expected())?.0)),
            Kind::OptFloat if none(self) => Val::OptFloat(None),
            Kind::OptFloat => Val::OptFloat(Some(self.float(k.expected())?)),
            Kind::Ranges => Val::Ranges(self.word_list(k.expected(), attrs::range)?),
            Kind::Runs => Val::Runs(self.word_list(k.expected(), attrs::run)?),
        })
    }

    fn float(&mut self, what: &str) -> R<f32> {
        let (w, t) = self.word(what)?;
        w.parse::<f32>().map_err(|_| Self::expected(&t, what))
    }

    /// `[a,b,c]`
    fn triple(&mut self) -> R<[usize; 3]> {
        self.punct('[')?;
        let mut v = [0; 3];
        for (i, slot) in v.iter_mut().enumerate() {
            if i > 0 {
                self.punct(',')?;
            }
            *slot = self.int("a non-negative integer")?.0;
        }
        let t = self.next();
        if t.tok != Tok::Punct(']') {
            return Err(Self::expected(&t, "`]` after three integers"));
        }
        Ok(v)
    }

    /// `%N` used as an operand or output: the node it names, defined above.
    fn use_value(&mut self) -> R<NodeId> {
        self.punct('%')?;
        let (n, t) = self.int("a value number after `%`")?;
        match self.values.get(&n) {
            Some(&(id, _)) => Ok(id),
            None if self.defined.contains(&n) => {
                Err(Self::at(&t, format!("%{n} is used before its definition")))
            }
            None => Err(Self::at(&t, format!("%{n} is never defined"))),
        }
    }

    fn file(&mut self) -> R<()> {
        self.keyword("graph")?;
        self.g.name = self.string("the graph name (a string)")?;
        self.punct('{')?;
        let mut outputs: HashMap<String, usize> = HashMap::new();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Punct('%') => self.node()?,
                Tok::Word(w) if w == "output" => {
                    self.next();
                    let name = self.string("the output name (a string)")?;
                    if let Some(line) = outputs.get(&name) {
                        let msg = format!("duplicate output {name:?} (first on line {line})");
                        return Err(Self::at(&t, msg));
                    }
                    self.punct('=')?;
                    let id = self.use_value()?;
                    outputs.insert(name.clone(), t.line);
                    self.g.set_output(name, id);
                }
                _ => return Err(Self::expected(&t, "`%N = ...`, `output` or `}`")),
            }
        }
        let t = self.next();
        if t.tok != Tok::Eof {
            return Err(Self::at(
                &t,
                format!("unexpected {} after the graph", t.tok),
            ));
        }
        Ok(())
    }

    /// `%N = rhs : type label?`
    fn node(&mut self) -> R<()> {
        self.punct('%')?;
        let (n, t) = self.int("a value number after `%`")?;
        if let Some(&(_, line)) = self.values.get(&n) {
            return Err(Self::at(
                &t,
                format!("%{n} is already defined on line {line}"),
            ));
        }
        self.punct('=')?;
        let (mnemonic, mt) = self.word("an op name")?;
        let (op, operands, implied_label) = match mnemonic.as_str() {
            "input" | "weight" => {
                let name = self.string("a tensor name (a string)")?;
                let operands = if self.is_punct('(') {
                    self.args()?
                } else {
                    Vec::new()
                };
                if mnemonic == "input" {
                    (Op::Input { name }, operands, None)
                } else {
                    (Op::Weight { name: name.clone() }, operands, Some(name))
                }
            }
            _ => {
                let Some(spec) = spec(&mnemonic) else {
                    return Err(Self::at(&mt, format!("unknown op `{mnemonic}`")));
                };
                let vals = self.attrs(&mnemonic, spec, &mt)?;
                let operands = self.args()?;
                let op = build_op(&mnemonic, &vals)
                    .ok_or_else(|| Self::at(&mt, format!("bad attributes for `{mnemonic}`")))?;
                (op, operands, None)
            }
        };
        self.punct(':')?;
        let ty = self.tensor_type()?;
        let label = if self.is_punct('@') {
            self.next();
            match self.next() {
                Token {
                    tok: Tok::Str(s), ..
                } => Some(s),
                Token {
                    tok: Tok::Word(w), ..
                } if w == "none" => None,
                other => return Err(Self::expected(&other, "a label string or `none` after `@`")),
            }
        } else {
            implied_label
        };
        let id = self.g.add_typed(op, &operands, ty, label);
        self.values.insert(n, (id, t.line));
        Ok(())
    }

    /// `(%a, %b, ...)`, possibly empty.
    fn args(&mut self) -> R<Vec<NodeId>> {
        self.punct('(')?;
        let mut v = Vec::new();
        if self.is_punct(')') {
            self.next();
            return Ok(v);
        }
        loop {
            v.push(self.use_value()?);
            let t = self.next();
            match t.tok {
                Tok::Punct(',') => {}
                Tok::Punct(')') => return Ok(v),
                _ => return Err(Self::expected(&t, "`,` or `)`")),
            }
        }
    }

    /// `{name=value, ...}` (optional when the op has no attributes): every attribute of `spec`
    /// exactly once, any order; returned in `spec` order.
    fn attrs(
        &mut self,
        mnemonic: &str,
        spec: &[(&'static str, Kind)],
        op_tok: &Token,
    ) -> R<Vec<Val>> {
        let mut got: Vec<Option<Val>> = vec![None; spec.len()];
        let names = || {
            let v: Vec<&str> = spec.iter().map(|(n, _)| *n).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        if self.is_punct('{') {
            self.next();
            if self.is_punct('}') {
                self.next();
            } else {
                loop {
                    let (name, t) = self.word("an attribute name")?;
                    let Some(i) = spec.iter().position(|(n, _)| *n == name) else {
                        let msg = format!(
                            "unknown attribute `{name}` of `{mnemonic}` (it takes: {})",
                            names()
                        );
                        return Err(Self::at(&t, msg));
                    };
                    if got[i].is_some() {
                        return Err(Self::at(&t, format!("duplicate attribute `{name}`")));
                    }
                    self.punct('=')?;
                    got[i] = Some(self.attr_value(spec[i].1)?);
                    let t = self.next();
                    match t.tok {
                        Tok::Punct(',') => {}
                        Tok::Punct('}') => break,
                        _ => return Err(Self::expected(&t, "`,` or `}`")),
                    }
                }
            }
        }
        let mut vals = Vec::with_capacity(spec.len());
        for (slot, (name, _)) in got.into_iter().zip(spec) {
            match slot {
                Some(v) => vals.push(v),
                None => {
                    let msg = format!("`{mnemonic}` is missing its attribute `{name}`");
                    return Err(Self::at(op_tok, msg));
                }
            }
        }
        Ok(vals)
    }

    /// `f32[1,4,8,8,8]`, `i32[]`.
    fn tensor_type(&mut self) -> R<TensorType> {
        let (w, t) = self.word("a type such as f32[1,4,8,8,8]")?;
        let dtype = DType::from_name(&w).ok_or_else(|| {
            Self::at(
                &t,
                format!("unknown element type `{w}` (expected f32 or i32)"),
            )
        })?;
        self.punct('[')?;
        let mut shape = Vec::new();
        if self.is_punct(']') {
            self.next();
            return Ok(TensorType::new(dtype, shape));
        }
        loop {
            shape.push(self.int("a dimension (a non-negative integer)")?.0);
            let t = self.next();
            match t.tok {
                Tok::Punct(',') => {}
                Tok::Punct(']') => return Ok(TensorType::new(dtype, shape)),
                _ => return Err(Self::expected(&t, "`,` or `]` in the shape")),
            }
        }
    }
}
