//! The filter's parser: text to an expression tree with columns in its
//! errors, then the tree expanded into alternatives of comparisons, within
//! bounds on depth and size.

use super::ast::{Comparison, Expr, Literal, Op, Operand};
use crate::record::FILTER_TEXT;

/// An error with the column it points at.
fn at(text: &str, col: usize, msg: &str) -> String {
    format!(
        "--filter: {msg} at column {}\n  {text}\n  {}^",
        col + 1,
        " ".repeat(col)
    )
}

/// Parentheses nested deeper than this are refused (the parser recurses).
const DEPTH: usize = 32;

/// Alternatives (and comparisons in one) allowed while expanding: checked
/// before each product is allocated, so no input can expand without bound.
const EXPANDED: usize = 64;

/// Comparisons in one expression: bounds the tree (and its recursion) too.
const COMPARISONS: usize = 256;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    comparisons: usize,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while let Some(c) = self.text[self.pos..].chars().next().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn err(&self, msg: &str) -> String {
        at(self.text, self.pos, msg)
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.eat("(") {
            if self.depth >= DEPTH {
                return Err(self.err(&format!("parentheses nested over {DEPTH} deep")));
            }
            self.depth += 1;
            let e = self.expr()?;
            self.depth -= 1;
            if !self.eat(")") {
                return Err(self.err("expected `)`"));
            }
            return Ok(e);
        }
        self.skip();
        self.comparisons += 1;
        if self.comparisons > COMPARISONS {
            return Err(self.err(&format!("more than {COMPARISONS} comparisons")));
        }
        let start = self.pos;
        let word: String = self.text[self.pos..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let operand = match word.as_str() {
            "ret" => Operand::Ret,
            "pid" => Operand::Pid,
            "tid" => Operand::Tid,
            "comm" => Operand::Comm,
            "func" => Operand::Func,
            w => match w.strip_prefix("arg").and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if n <= 5 => Operand::Arg(n),
                _ => return Err(at(self.text, start, "expected arg0..arg5, ret, pid, tid, comm or func")),
            },
        };
        self.pos += word.len();
        // `arg0:i`: the operand's C type, for the comparison.
        let typed = if self.text[self.pos..].starts_with(':') && matches!(operand, Operand::Arg(_) | Operand::Ret) {
            let t: String = self.text[self.pos + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let v = super::ValueType::from_letter(&t).ok_or_else(|| {
                at(
                    self.text,
                    self.pos + 1,
                    "a type: i (int), u (unsigned), l (long) or x (unsigned 64-bit)",
                )
            })?;
            self.pos += 1 + t.len();
            Some(v)
        } else {
            None
        };
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(t, _)| self.eat(t))
        .map(|(_, op)| op)
        .ok_or_else(|| self.err("expected a comparison: == != < <= > >="))?;
        self.skip();
        let value = self.literal()?;
        let text_ok = matches!(operand, Operand::Comm | Operand::Func | Operand::Arg(_));
        match &value {
            Literal::Text(_) if !text_ok => {
                return Err(at(self.text, start, "a string compares with comm, func or argN"))
            }
            Literal::Text(_) if !matches!(op, Op::Eq | Op::Ne) => {
                return Err(at(self.text, start, "strings compare with == or != only"))
            }
            Literal::Int(_) if matches!(operand, Operand::Comm | Operand::Func) => {
                return Err(at(self.text, start, "comm and func compare with a \"string\""))
            }
            Literal::Text(t) if t.trim_end_matches('*').len() >= FILTER_TEXT && operand != Operand::Func => {
                return Err(at(
                    self.text,
                    start,
                    &format!(
                        "strings compare on their first {} bytes: shorten it (a trailing * for a prefix)",
                        FILTER_TEXT - 1
                    ),
                ))
            }
            _ => {}
        }
        Ok(Expr::Cmp(Comparison {
            operand,
            typed,
            op,
            value,
        }))
    }

    fn literal(&mut self) -> Result<Literal, String> {
        let rest = &self.text[self.pos..];
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let body = &rest[1..];
            let end = body.find(q).ok_or_else(|| self.err("unterminated string"))?;
            self.pos += end + 2;
            return Ok(Literal::Text(body[..end].to_string()));
        }
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let (neg, digits) = match token.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, token.as_str()),
        };
        let parsed = match digits.strip_prefix("0x") {
            Some(hex) => i128::from_str_radix(hex, 16),
            None => digits.parse::<i128>(),
        };
        let v = parsed.map_err(|_| self.err("expected a number or a \"string\""))?;
        let v = if neg { -v } else { v };
        if v > i128::from(u64::MAX) || v < i128::from(i64::MIN) {
            return Err(self.err("the number does not fit in 64 bits"));
        }
        self.pos += token.len();
        Ok(Literal::Int(v))
    }
}

/// Disjunctive normal form: (a || b) && c = a && c || b && c. Each step's
/// size is checked against [`EXPANDED`] before it is built.
fn dnf(e: Expr) -> Result<Vec<Vec<Comparison>>, usize> {
    match e {
        Expr::Cmp(c) => Ok(vec![vec![c]]),
        Expr::Or(a, b) => {
            let mut v = dnf(*a)?;
            let w = dnf(*b)?;
            if v.len() + w.len() > EXPANDED {
                return Err(v.len() + w.len());
            }
            v.extend(w);
            Ok(v)
        }
        Expr::And(a, b) => {
            let (a, b) = (dnf(*a)?, dnf(*b)?);
            let longest = |v: &[Vec<Comparison>]| v.iter().map(Vec::len).max().unwrap_or(0);
            if a.len().saturating_mul(b.len()) > EXPANDED || longest(&a) + longest(&b) > EXPANDED {
                return Err(a.len().saturating_mul(b.len()));
            }
            let mut out = Vec::with_capacity(a.len() * b.len());
            for x in &a {
                for y in &b {
                    out.push(x.iter().chain(y).cloned().collect());
                }
            }
            Ok(out)
        }
    }
}

/// Parses `text` into alternatives of comparisons; errors point at the column.
pub(super) fn terms(text: &str) -> Result<Vec<Vec<Comparison>>, String> {
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
        comparisons: 0,
    };
    let e = p.expr()?;
    p.skip();
    if p.pos != text.len() {
        return Err(p.err("expected `&&`, `||` or the end"));
    }
    dnf(e).map_err(|n| {
        format!(
            "--filter: {n} or more alternatives (or comparisons in one) once expanded, over {EXPANDED}: simplify it"
        )
    })
}
