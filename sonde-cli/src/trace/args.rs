//! `--args` and `--ret`: how each function's arguments and return value are
//! read and shown.

use sonde::resolve::Pattern;

use crate::error::CliError;

/// How an argument or return value is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// `i`: a C `int` (low 32 bits, signed).
    Int,
    /// `u`: a C `unsigned` (low 32 bits).
    Uint,
    /// `l`: a 64-bit signed integer (`long`, `ssize_t`).
    Long,
    /// `x`: 64-bit hexadecimal.
    Hex,
    /// An argument of a count (`--args 3`): hexadecimal, or as a USDT note
    /// types it (signed or not).
    Raw,
    /// `p`: a pointer (hexadecimal).
    Ptr,
    /// `s`: a NUL-terminated string read from the process at entry (up to
    /// `--max-bytes`, 256 by default).
    Str,
    /// `s@ret`: a NUL-terminated string read when the function returns (an
    /// output buffer: `getline`, `fgets`), its pointer kept from entry.
    StrAtReturn,
    /// `b:LEN`: a buffer of LEN bytes (up to 4096; `argN` and `ret` lengths
    /// up to `--max-bytes`), shown escaped: read at entry, or at return for
    /// `b:ret` (as many bytes as the call returned).
    Bytes(Len),
    /// The second register of a `gs` (a Go string: pointer, then length, as
    /// Go's register ABI passes it): read for the string's length, not shown.
    Hidden,
}

/// Where a buffer's length comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    /// A number of bytes.
    Const(u32),
    /// Argument N (0..=5) at entry.
    Arg(u8),
    /// The return value (negative: none); the buffer is read at return.
    Ret,
}

/// The most bytes a string or buffer carries in a record.
const MAX_BYTES: u32 = crate::record::TEXT_MAX as u32;

impl ArgType {
    fn parse(s: &str) -> Result<ArgType, String> {
        let s = s.trim();
        if let Some(len) = s.strip_prefix("b:") {
            let len = match len {
                "ret" => Len::Ret,
                _ => match len.strip_prefix("arg").map(str::parse::<u8>) {
                    Some(Ok(n)) if n <= 5 => Len::Arg(n),
                    Some(_) => return Err(format!("`{s}`: the length is arg0..arg5, ret or a number")),
                    None => match len.parse::<u32>() {
                        Ok(n) if (1..=MAX_BYTES).contains(&n) => Len::Const(n),
                        Ok(n) => return Err(format!("`{s}`: {n} bytes; a buffer is 1 to {MAX_BYTES} bytes")),
                        Err(_) => return Err(format!("`{s}`: the length is arg0..arg5, ret or a number")),
                    },
                },
            };
            return Ok(ArgType::Bytes(len));
        }
        Ok(match s {
            "i" => ArgType::Int,
            "u" => ArgType::Uint,
            "l" => ArgType::Long,
            "x" => ArgType::Hex,
            "p" => ArgType::Ptr,
            "s" => ArgType::Str,
            "s@ret" => ArgType::StrAtReturn,
            other => {
                return Err(format!(
                "`{other}` is not an argument type: i (int), u (unsigned), l (long), x (hex), p (pointer), s (string), s@ret (string read at return), b:LEN (buffer of LEN bytes: a number, argN or ret), gs (a Go string: two registers)"
            ))
            }
        })
    }

    /// The type a filter compares this argument as, if it says one.
    pub fn value_type(self) -> Option<crate::filter::ValueType> {
        use crate::filter::ValueType;
        match self {
            ArgType::Int => Some(ValueType::I32),
            ArgType::Uint => Some(ValueType::U32),
            ArgType::Long => Some(ValueType::I64),
            ArgType::Hex | ArgType::Ptr => Some(ValueType::U64),
            _ => None,
        }
    }

    /// Whether the value is memory of the process (a string or a buffer).
    pub fn reads_memory(self) -> bool {
        matches!(self, ArgType::Str | ArgType::StrAtReturn | ArgType::Bytes(_))
    }

    /// Whether that memory is read when the function returns.
    pub fn at_return(self) -> bool {
        matches!(self, ArgType::StrAtReturn | ArgType::Bytes(Len::Ret))
    }
}

/// `--args`: types for every function, and for the functions a pattern names.
#[derive(Clone, Debug, Default)]
pub struct ArgSpecs {
    all: Vec<ArgType>,
    by_pattern: Vec<(String, Vec<ArgType>)>,
}

/// A type list (`s,i,x`) or a count (`3`: three hex arguments).
fn parse_types(s: &str) -> Result<Vec<ArgType>, String> {
    if let Ok(n) = s.trim().parse::<usize>() {
        if n > 6 {
            return Err(format!("{n} arguments: at most 6 are read"));
        }
        return Ok(vec![ArgType::Raw; n]);
    }
    let mut types = Vec::new();
    for t in s.split(',') {
        if t.trim() == "gs" {
            // A Go string takes two registers: its pointer here, its length next.
            let at = types.len();
            let len = u8::try_from(at + 1)
                .ok()
                .filter(|n| *n <= 5)
                .ok_or_else(|| format!("`gs` as argument {at}: a Go string needs two of the first 6 registers"))?;
            types.push(ArgType::Bytes(Len::Arg(len)));
            types.push(ArgType::Hidden);
        } else {
            types.push(ArgType::parse(t)?);
        }
    }
    if types.len() > 6 {
        return Err(format!(
            "{} argument registers: at most 6 are read (`gs` takes two)",
            types.len()
        ));
    }
    let texts = types.iter().filter(|t| t.reads_memory()).count();
    if texts > crate::record::TEXTS {
        return Err(format!(
            "{texts} strings or buffers: a call carries at most {}",
            crate::record::TEXTS
        ));
    }
    Ok(types)
}

impl ArgSpecs {
    /// The largest `b:LEN` of any function (0 without one).
    pub fn largest_buffer(&self) -> u32 {
        self.all
            .iter()
            .chain(self.by_pattern.iter().flat_map(|(_, t)| t))
            .filter_map(|t| match t {
                ArgType::Bytes(Len::Const(n)) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether some function's memory is read at return (the return program
    /// then runs, `--ret` or not).
    pub fn any_at_return(&self) -> bool {
        self.all
            .iter()
            .chain(self.by_pattern.iter().flat_map(|(_, t)| t))
            .any(|t| t.at_return())
    }

    /// The `PATTERN=TYPES` patterns no function named `(raw, display)` in
    /// `names` matches: said to the user, never silently ignored.
    pub fn unmatched<'a>(&'a self, names: &[(&str, &str)]) -> Vec<&'a str> {
        self.by_pattern
            .iter()
            .filter(|(pattern, _)| {
                Pattern::new(pattern)
                    .is_ok_and(|p| !names.iter().any(|(raw, shown)| p.matches(raw) || p.matches(shown)))
            })
            .map(|(pattern, _)| pattern.as_str())
            .collect()
    }

    /// Parses every `--args` value: `TYPES` (all functions) or `PATTERN=TYPES`.
    pub fn parse(values: &[String]) -> Result<ArgSpecs, CliError> {
        let mut specs = ArgSpecs::default();
        for v in values {
            let err = |e: String| CliError::new(format!("--args {v}: {e}"));
            match v.split_once('=') {
                Some((pattern, types)) => specs
                    .by_pattern
                    .push((pattern.to_string(), parse_types(types).map_err(err)?)),
                None => specs.all = parse_types(v).map_err(err)?,
            }
        }
        Ok(specs)
    }

    /// The types of a function named `raw` (demangled `display`): the last
    /// pattern that matches it, else the types for all.
    pub fn of(&self, raw: &str, display: &str) -> Vec<ArgType> {
        for (pattern, types) in self.by_pattern.iter().rev() {
            if let Ok(p) = Pattern::new(pattern) {
                if p.matches(raw) || p.matches(display) {
                    return types.clone();
                }
            }
        }
        self.all.clone()
    }
}

/// Parses `--ret [TYPE]`: a type of the value itself (`s`: the string it
/// points to); buffers and reads at return are `--args` types.
pub fn parse_ret(s: &str) -> Result<ArgType, String> {
    match ArgType::parse(s)? {
        t @ (ArgType::StrAtReturn | ArgType::Bytes(_)) => Err(format!(
            "--ret {s}: `{t:?}` types arguments; the return value is i, u, l, x, p or s"
        )),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_specs() {
        let specs = ArgSpecs::parse(&["2".into(), "readline=s".into(), "fx_*=s,i".into()]).expect("specs");
        assert_eq!(specs.of("other", "other"), vec![ArgType::Raw; 2]);
        assert_eq!(specs.of("readline", "readline"), vec![ArgType::Str]);
        assert_eq!(specs.of("fx_echo", "fx_echo"), vec![ArgType::Str, ArgType::Int]);
        assert!(ArgSpecs::parse(&["s,s".into()]).is_ok());
        assert!(ArgSpecs::parse(&["s,s,s,s,s".into()]).is_err(), "at most four texts");
        assert!(ArgSpecs::parse(&["7".into()]).is_err());
        // A Go string: its pointer, then its length in the next register.
        let go = ArgSpecs::parse(&["i,gs,x".into()]).expect("gs");
        assert_eq!(
            go.of("f", "f"),
            vec![ArgType::Int, ArgType::Bytes(Len::Arg(2)), ArgType::Hidden, ArgType::Hex]
        );
        assert!(ArgSpecs::parse(&["i,i,i,i,gs".into()]).is_ok());
        assert!(ArgSpecs::parse(&["i,i,i,i,i,gs".into()]).is_err());
        assert!(ArgSpecs::parse(&["gs,gs,gs,i".into()]).is_err());
        assert!(ArgSpecs::parse(&["q".into()]).is_err());
    }

    #[test]
    fn buffers_and_reads_at_return() {
        let specs = ArgSpecs::parse(&["SSL_read=p,b:ret,i".into(), "read=i,b:arg2,u".into()]).expect("specs");
        assert_eq!(specs.of("SSL_read", "SSL_read")[1], ArgType::Bytes(Len::Ret));
        assert_eq!(specs.of("read", "read")[1], ArgType::Bytes(Len::Arg(2)));
        assert!(specs.any_at_return());
        assert_eq!(specs.unmatched(&[("SSL_read", "SSL_read")]), ["read"]);
        assert_eq!(ArgType::parse("b:64"), Ok(ArgType::Bytes(Len::Const(64))));
        assert_eq!(ArgType::parse("s@ret"), Ok(ArgType::StrAtReturn));
        for bad in ["b:0", "b:4097", "b:arg6", "b:", "b:x"] {
            assert!(ArgType::parse(bad).is_err(), "{bad}");
        }
        assert!(ArgSpecs::parse(&["s,b:ret".into()]).is_ok(), "several per call");
        assert!(parse_ret("b:ret").is_err() && parse_ret("s").is_ok());
    }
}
