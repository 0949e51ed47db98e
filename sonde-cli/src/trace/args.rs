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
    /// `p`: a pointer (hexadecimal).
    Ptr,
    /// `s`: a NUL-terminated string read from the process (up to 256 bytes).
    Str,
}

impl ArgType {
    fn parse(s: &str) -> Result<ArgType, String> {
        Ok(match s.trim() {
            "i" => ArgType::Int,
            "u" => ArgType::Uint,
            "l" => ArgType::Long,
            "x" => ArgType::Hex,
            "p" => ArgType::Ptr,
            "s" => ArgType::Str,
            other => {
                return Err(format!(
                "`{other}` is not an argument type: i (int), u (unsigned), l (long), x (hex), p (pointer), s (string)"
            ))
            }
        })
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
        return Ok(vec![ArgType::Hex; n]);
    }
    let types = s.split(',').map(ArgType::parse).collect::<Result<Vec<_>, _>>()?;
    if types.len() > 6 {
        return Err(format!("{} argument types: at most 6 are read", types.len()));
    }
    if types.iter().filter(|t| **t == ArgType::Str).count() > 1 {
        return Err("one string argument per function (the program reads one string per call)".into());
    }
    Ok(types)
}

impl ArgSpecs {
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

/// Parses `--ret [TYPE]`.
pub fn parse_ret(s: &str) -> Result<ArgType, String> {
    ArgType::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_specs() {
        let specs = ArgSpecs::parse(&["2".into(), "readline=s".into(), "fx_*=s,i".into()]).expect("specs");
        assert_eq!(specs.of("other", "other"), vec![ArgType::Hex; 2]);
        assert_eq!(specs.of("readline", "readline"), vec![ArgType::Str]);
        assert_eq!(specs.of("fx_echo", "fx_echo"), vec![ArgType::Str, ArgType::Int]);
        assert!(ArgSpecs::parse(&["s,s".into()]).is_err());
        assert!(ArgSpecs::parse(&["7".into()]).is_err());
        assert!(ArgSpecs::parse(&["q".into()]).is_err());
    }
}
