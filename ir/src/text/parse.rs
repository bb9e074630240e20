//! The parser: a hand-written recursive-descent reader over [`super::lex`] tokens that builds a
//! [`Graph`] with `add_typed`, so declared types are kept as written for the verifier to judge.
//!
//! What the parser itself enforces is only what the text must say to mean a graph: known ops,
//! every attribute of an op exactly once with a value of the right kind, well-formed types, each
//! `%N` defined once and before any use, distinct output names. Arity, dtypes and shapes are the
//! verifier's business. The parser never panics and has no recursion, so hostile input can only
//! produce an `IrError::Parse` with the line and column of the offending token.

use std::collections::{HashMap, HashSet};

use super::lex::{lex, Located, Tok, Token};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{ConvAttrs, Op, PoolAttrs, ShiftAttrs};
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

/// The kind of value an attribute takes.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Float,
    Triple,
}

#[derive(Clone, Copy)]
enum Val {
    Int(usize),
    Float(f32),
    Triple([usize; 3]),
}

/// The attributes of each op mnemonic, in printing order; `None` for an unknown op.
fn spec(mnemonic: &str) -> Option<&'static [(&'static str, Kind)]> {
    const CONV: &[(&str, Kind)] = &[
        ("kernel", Kind::Triple),
        ("stride", Kind::Triple),
        ("padding", Kind::Triple),
    ];
    Some(match mnemonic {
        "conv3d" | "conv_transpose3d" => CONV,
        "max_pool3d" => &[("kernel", Kind::Triple), ("stride", Kind::Triple)],
        "depth_shift" => &[("groups", Kind::Int)],
        "instance_norm" => &[("eps", Kind::Float)],
        "leaky_relu" => &[("slope", Kind::Float)],
        "concat" | "add" | "softmax" | "argmax" => &[],
        _ => return None,
    })
}

/// Builds the op from its mnemonic and its complete attribute list (in `spec` order).
fn build_op(mnemonic: &str, vals: &[Val]) -> Option<Op> {
    let int = |i: usize| match vals.get(i) {
        Some(Val::Int(v)) => Some(*v),
        _ => None,
    };
    let float = |i: usize| match vals.get(i) {
        Some(Val::Float(v)) => Some(*v),
        _ => None,
    };
    let triple = |i: usize| match vals.get(i) {
        Some(Val::Triple(v)) => Some(*v),
        _ => None,
    };
    let conv = || {
        Some(ConvAttrs {
            kernel: triple(0)?,
            stride: triple(1)?,
            padding: triple(2)?,
        })
    };
    Some(match mnemonic {
        "conv3d" => Op::Conv3d(conv()?),
        "conv_transpose3d" => Op::ConvTranspose3d(conv()?),
        "max_pool3d" => Op::MaxPool3d(PoolAttrs {
            kernel: triple(0)?,
            stride: triple(1)?,
        }),
        "depth_shift" => Op::DepthShift(ShiftAttrs { groups: int(0)? }),
        "instance_norm" => Op::InstanceNorm { eps: float(0)? },
        "leaky_relu" => Op::LeakyRelu { slope: float(0)? },
        "concat" => Op::Concat,
        "add" => Op::Add,
        "softmax" => Op::Softmax,
        "argmax" => Op::Argmax,
        _ => return None,
    })
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
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Self::expected(&t, what));
        }
        let v = w
            .parse::<usize>()
            .map_err(|_| Self::at(&t, format!("integer `{w}` is too large")))?;
        Ok((v, t))
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
                    got[i] = Some(match spec[i].1 {
                        Kind::Int => Val::Int(self.int("a non-negative integer")?.0),
                        Kind::Float => Val::Float(self.float("a number")?),
                        Kind::Triple => Val::Triple(self.triple()?),
                    });
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
