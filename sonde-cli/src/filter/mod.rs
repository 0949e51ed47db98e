//! `--filter EXPR`: a small expression language compiled, per function, into
//! the `FILTERS` array the programs evaluate on every hit (never post-hoc).
//!
//! ```text
//! expr    := and ('||' and)*
//! and     := primary ('&&' primary)*
//! primary := '(' expr ')' | operand OP value
//! operand := arg0..arg5 | ret | pid | tid | comm | func
//! OP      := == != < <= > >=
//! value   := integer (decimal, 0x.., negative) | "string" (a trailing * matches a prefix)
//! ```
//!
//! `argN` compared with a string reads argument N as a C string (the first 32
//! bytes); `func` compares the function's name (a glob) and is decided here, per
//! function, before anything reaches the kernel. The expression is expanded
//! into at most [`TERMS`] alternatives of at most [`CONDS`] comparisons.

mod ast;
mod parse;

use sonde::resolve::Pattern;

use crate::record::{Cond, Filter, CONDS, FILTER_TEXT, TERMS};
use ast::{Comparison, Literal, Op, Operand};

/// A parsed filter: alternatives of comparisons (disjunctive normal form).
#[derive(Debug, Clone)]
pub struct FilterExpr {
    text: String,
    terms: Vec<Vec<Comparison>>,
}

/// How a number an argument or the return value holds is compared: the C
/// type the user declared (`--args`, `arg0:i`) or a USDT note gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// `x`, pointers: unsigned 64-bit.
    U64,
    /// `l`: signed 64-bit (the default for arguments and return values).
    I64,
    /// `i`: a C `int`, the register's low half sign-extended.
    I32,
    /// `u`: a C `unsigned`, the register's low half.
    U32,
}

impl ValueType {
    /// `i`, `u`, `l`, `x`.
    pub fn from_letter(s: &str) -> Option<ValueType> {
        match s {
            "i" => Some(ValueType::I32),
            "u" => Some(ValueType::U32),
            "l" => Some(ValueType::I64),
            "x" | "p" => Some(ValueType::U64),
            _ => None,
        }
    }
}

/// The types declared for one function's arguments and return value.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    /// Arguments 0..=5.
    pub args: [Option<ValueType>; 6],
    /// The return value.
    pub ret: Option<ValueType>,
}

/// How comparison `c` reads its value: the type in the filter, else the
/// declared one, else signed 64-bit for arguments and return values (a
/// negative literal compares as signed whatever else), unsigned for pid and tid.
fn mode(c: &Comparison, declared: &Declared, negative: bool) -> u32 {
    use crate::record::{CMP_I32, CMP_I64, CMP_U32, CMP_U64};
    let declared = match c.operand {
        Operand::Arg(n) => declared.args.get(usize::from(n)).copied().flatten(),
        Operand::Ret => declared.ret,
        _ => return if negative { CMP_I64 } else { CMP_U64 },
    };
    match c.typed.or(declared).unwrap_or(ValueType::I64) {
        ValueType::I32 => CMP_I32,
        ValueType::U32 if !negative => CMP_U32,
        ValueType::U64 if !negative => CMP_U64,
        _ => CMP_I64,
    }
}

/// Where a program evaluates the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// At entry: arguments, pid, tid, comm.
    Entry,
    /// At return: the return value, pid, tid, comm.
    Return,
}

impl FilterExpr {
    /// Parses `text`; errors point at the column.
    pub fn parse(text: &str) -> Result<FilterExpr, String> {
        let terms = parse::terms(text)?;
        Ok(FilterExpr {
            text: text.to_string(),
            terms,
        })
    }

    /// Whether a comparison looks at the return value.
    pub fn uses_ret(&self) -> bool {
        self.terms.iter().flatten().any(|c| c.operand == Operand::Ret)
    }

    /// The program's filter for the function named `raw` (demangled
    /// `display`), evaluated at `site`: `func` comparisons decided here.
    #[cfg(test)]
    pub fn compile(&self, raw: &str, display: &str, site: Site) -> Result<Filter, String> {
        self.compile_typed(raw, display, site, &Declared::default())
    }

    /// The program's filter for the function named `raw` (demangled
    /// `display`), evaluated at `site`, numbers compared as `declared` types them
    /// (a type written in the filter, `arg0:i`, comes first).
    pub fn compile_typed(&self, raw: &str, display: &str, site: Site, declared: &Declared) -> Result<Filter, String> {
        let mut terms: Vec<Vec<&Comparison>> = Vec::new();
        'term: for t in &self.terms {
            let mut kept = Vec::new();
            for c in t {
                if c.operand == Operand::Func {
                    let Literal::Text(glob) = &c.value else { continue };
                    let matched = Pattern::new(glob).is_ok_and(|p| p.matches(raw) || p.matches(display));
                    if matched != (c.op == Op::Eq) {
                        continue 'term; // this alternative is false for this function
                    }
                    continue; // true: nothing left to check
                }
                match (site, &c.operand) {
                    (Site::Entry, Operand::Ret) => {
                        return Err(format!(
                            "--filter {}: ret is only known at return (trace --ret, hist --of ret)",
                            self.text
                        ))
                    }
                    (Site::Return, Operand::Arg(_)) => {
                        return Err(format!("--filter {}: arguments are not known at return", self.text))
                    }
                    _ => {}
                }
                kept.push(c);
            }
            if kept.is_empty() {
                // An alternative that is true for this function: no filter.
                return Ok(Filter::pass());
            }
            terms.push(kept);
        }
        if terms.is_empty() {
            return Ok(Filter::never());
        }
        if terms.len() > TERMS || terms.iter().any(|t| t.len() > CONDS) {
            return Err(format!(
                "--filter {}: {} alternatives of up to {} comparisons once expanded; the program evaluates at most {TERMS} of {CONDS}",
                self.text,
                terms.len(),
                terms.iter().map(Vec::len).max().unwrap_or(0)
            ));
        }
        let text_args: Vec<u8> = terms
            .iter()
            .flatten()
            .filter_map(|c| match (&c.operand, &c.value) {
                (Operand::Arg(n), Literal::Text(_)) => Some(*n),
                _ => None,
            })
            .collect();
        if text_args.iter().any(|n| *n != text_args[0]) {
            return Err(format!("--filter {}: strings of one argument per filter", self.text));
        }
        let mut f = Filter::pass();
        f.terms = terms.len() as u32;
        f.text_arg = text_args.first().map_or(0, |n| u32::from(*n) + 1);
        for (i, t) in terms.iter().enumerate() {
            f.lens[i] = t.len() as u32;
            for (j, c) in t.iter().enumerate() {
                f.conds[i * CONDS + j] = cond(c, declared);
            }
        }
        Ok(f)
    }
}

fn cond(c: &Comparison, declared: &Declared) -> Cond {
    use crate::record::{OP_EQ, OP_GE, OP_GT, OP_LE, OP_LT, OP_NE};
    use crate::record::{SRC_ARG, SRC_ARG_TEXT, SRC_COMM, SRC_PID, SRC_RET, SRC_TID};
    let op = match c.op {
        Op::Eq => OP_EQ,
        Op::Ne => OP_NE,
        Op::Lt => OP_LT,
        Op::Le => OP_LE,
        Op::Gt => OP_GT,
        Op::Ge => OP_GE,
    };
    let mut out = Cond {
        source: 0,
        op,
        value: 0,
        signed: 0,
        _pad: 0,
        words: [0; FILTER_TEXT / 8],
        mask: [0; FILTER_TEXT / 8],
    };
    match &c.value {
        Literal::Int(v) => {
            out.value = *v as u64;
            out.signed = mode(c, declared, *v < 0);
            out.source = match c.operand {
                Operand::Arg(n) => SRC_ARG + u32::from(n),
                Operand::Ret => SRC_RET,
                Operand::Pid => SRC_PID,
                _ => SRC_TID,
            };
        }
        Literal::Text(t) => {
            let (body, prefix) = match t.strip_suffix('*') {
                Some(b) => (b, true),
                None => (t.as_str(), false),
            };
            // The bytes that must match: the string, and its NUL unless a prefix.
            let mut bytes = body.as_bytes().to_vec();
            if !prefix {
                bytes.push(0);
            }
            bytes.truncate(FILTER_TEXT);
            let mut text = [0u8; FILTER_TEXT];
            let mut mask = [0u8; FILTER_TEXT];
            text[..bytes.len()].copy_from_slice(&bytes);
            mask[..bytes.len()].fill(0xff);
            for w in 0..FILTER_TEXT / 8 {
                let word = |b: &[u8; FILTER_TEXT]| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[w * 8..w * 8 + 8]);
                    u64::from_ne_bytes(a)
                };
                out.words[w] = word(&text);
                out.mask[w] = word(&mask);
            }
            out.source = match c.operand {
                Operand::Comm => SRC_COMM,
                _ => SRC_ARG_TEXT,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_expands() {
        let f = FilterExpr::parse("(arg0 > 1 || arg1 == -2) && comm == \"fix*\"").expect("parses");
        assert_eq!(f.terms.len(), 2);
        assert!(!f.uses_ret());
        let compiled = f.compile("fx", "fx", Site::Entry).expect("compiles");
        assert_eq!(compiled.terms, 2);
        assert_eq!(compiled.lens[..2], [2, 2]);
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = FilterExpr::parse("arg0 > x1").expect_err("a bad number");
        assert!(e.contains("column 8"), "{e}");
        assert!(e.ends_with("       ^"), "{e}");
        let e = FilterExpr::parse("arg9 == 1").expect_err("no arg9");
        assert!(e.contains("column 1"), "{e}");
        assert!(FilterExpr::parse("pid == 1 &&").is_err());
        assert!(FilterExpr::parse("(pid == 1").is_err());
        assert!(FilterExpr::parse("pid == \"x\"").is_err());
    }

    #[test]
    fn func_is_decided_per_function() {
        let f = FilterExpr::parse("func == \"fx_a*\" || arg0 == 3").expect("parses");
        assert_eq!(
            f.compile("fx_alpha", "fx_alpha", Site::Entry).expect("c").terms,
            crate::record::FILTER_PASS
        );
        assert_eq!(f.compile("fx_delta", "fx_delta", Site::Entry).expect("c").terms, 1);
        let g = FilterExpr::parse("func == \"fx_a*\"").expect("parses");
        assert_eq!(
            g.compile("fx_delta", "fx_delta", Site::Entry).expect("c").terms,
            crate::record::FILTER_NEVER
        );
        assert!(FilterExpr::parse("ret == 0")
            .expect("p")
            .compile("f", "f", Site::Entry)
            .is_err());
    }
}
