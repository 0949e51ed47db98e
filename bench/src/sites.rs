//! The benchmark target's probe sites and sonde objects sized for them.

use crate::probes::{load_sizes, Map, OBJECT};
use anyhow::Result;
use sonde::{Functions, Object, ProbeSite};
use std::path::Path;

/// The CLI object, `COUNTS` sized to `n`, the maps `count` does not use made
/// small (as in the peer figures).
pub(crate) fn load_object(n: usize) -> Result<Object> {
    sonde_object(n)
}

/// `f0..f<n-1>` of a generated target, cookie = index.
pub(crate) fn first_targets(all: &[ProbeSite], n: usize) -> Vec<ProbeSite> {
    all[..n].to_vec()
}

/// The functions `f*` of `exe` ordered by their number, cookie = number.
pub fn resolve_numbered(exe: &Path) -> Result<Vec<ProbeSite>> {
    let set = Functions::in_binary(exe).pattern("f[0-9]*").resolve()?;
    let mut v: Vec<(usize, ProbeSite)> = set
        .targets()
        .into_iter()
        .filter_map(|t| Some((t.symbol.as_deref()?.get(1..)?.parse().ok()?, t)))
        .collect();
    v.sort_by_key(|(i, _)| *i);
    Ok(v.into_iter().map(|(i, t)| t.with_cookie(i as u64)).collect())
}

/// The CLI object with `COUNTS` sized to `n` and the maps `count` does not
/// use at their least, as `sonde count` makes them: the peers' objects have
/// only the counter.
pub(crate) fn sonde_object(n: usize) -> Result<Object> {
    let sizes = [(Map::Counts, n.max(1) as u32), (Map::Hist, 1), (Map::Stats, 1)];
    Ok(Object::load_static_with(OBJECT, &load_sizes(&sizes, true))?)
}
