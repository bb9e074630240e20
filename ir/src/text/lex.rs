//! The lexer of the text form: punctuation, double-quoted strings with escapes, and "words"
//! (identifiers and numbers alike, `[A-Za-z0-9_.+-]+`), each with its 1-based line and column.
//!
//! Numbers are left as words so that the parser decides, per attribute, whether it wants an
//! integer or a float; this keeps `1e-5`, `-0.0`, `inf` and `NaN` (Rust's `f32` spellings) in
//! one token, and likewise a channel range `0..96`, a shift run `-2x48`, `true` and `none`.
//! Comments (`;` to the end of the line) and whitespace are skipped here.

use std::fmt;

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// One of `{ } ( ) [ ] , = : @ %`.
    Punct(char),
    /// A string literal, unescaped.
    Str(String),
    /// An identifier or a number.
    Word(String),
    /// End of input.
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Str(s) => {
                let short: String = s.chars().take(40).collect();
                let more = if short.len() < s.len() { "..." } else { "" };
                write!(f, "string {}{more}", super::print::quote(&short))
            }
            Tok::Word(w) => {
                let short: String = w.chars().take(40).collect();
                let more = if short.len() < w.len() { "..." } else { "" };
                write!(f, "`{short}{more}`")
            }
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(super) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

/// A lexing or parsing error before it gets its path.
#[derive(Clone, Debug)]
pub(super) struct Located {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
}

struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, msg: impl Into<String>) -> Located {
        Located {
            line: self.line,
            col: self.col,
            msg: msg.into(),
        }
    }
}

/// Splits `src` into tokens; the last one is always `Tok::Eof`.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, Located> {
    let mut cur = Cursor {
        chars: src.chars().peekable(),
        line: 1,
        col: 1,
    };
    let mut toks = Vec::new();
    loop {
        let (line, col) = (cur.line, cur.col);
        let Some(c) = cur.peek() else {
            toks.push(Token {
                tok: Tok::Eof,
                line,
                col,
            });
            return Ok(toks);
        };
        let tok = if c.is_whitespace() {
            cur.bump();
            continue;
        } else if c == ';' {
            while cur.peek().is_some_and(|c| c != '\n') {
                cur.bump();
            }
            continue;
        } else if "{}()[],=:@%".contains(c) {
            cur.bump();
            Tok::Punct(c)
        } else if c == '"' {
            cur.bump();
            Tok::Str(string(&mut cur, line, col)?)
        } else if is_word_char(c) {
            let mut w = String::new();
            while let Some(c) = cur.peek().filter(|&c| is_word_char(c)) {
                w.push(c);
                cur.bump();
            }
            Tok::Word(w)
        } else {
            return Err(cur.err(format!("unexpected character {c:?}")));
        };
        toks.push(Token { tok, line, col });
    }
}

/// The rest of a string literal after its opening quote (at `line:col`).
fn string(cur: &mut Cursor<'_>, line: usize, col: usize) -> Result<String, Located> {
    let mut s = String::new();
    loop {
        match cur.peek() {
            None | Some('\n') => {
                return Err(Located {
                    line,
                    col,
                    msg: "unterminated string".into(),
                })
            }
            Some('"') => {
                cur.bump();
                return Ok(s);
            }
            Some('\\') => {
                let at = cur.err("");
                cur.bump();
                let bad = |what: &str| Located {
                    msg: format!("invalid escape {what} in string"),
                    ..at.clone()
                };
                match cur.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('0') => s.push('\0'),
                    Some('u') => s.push(unicode_escape(cur).ok_or_else(|| bad("`\\u`"))?),
                    Some(c) => return Err(bad(&format!("`\\{}`", c.escape_debug()))),
                    None => return Err(bad("at end of input")),
                }
            }
            Some(c) => {
                cur.bump();
                s.push(c);
            }
        }
    }
}

/// `{HEX}` after `\u`: 1 to 6 hex digits naming a Unicode scalar value.
fn unicode_escape(cur: &mut Cursor<'_>) -> Option<char> {
    if cur.bump()? != '{' {
        return None;
    }
    let mut v: u32 = 0;
    let mut digits = 0;
    loop {
        let c = cur.bump()?;
        if c == '}' {
            break;
        }
        v = v.checked_mul(16)?.checked_add(c.to_digit(16)?)?;
        digits += 1;
        if digits > 6 {
            return None;
        }
    }
    if digits == 0 {
        return None;
    }
    char::from_u32(v)
}
