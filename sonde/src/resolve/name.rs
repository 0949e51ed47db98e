//! [`Name`]: a function's name, sharing one buffer with every other name of
//! its symbol table.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// A name as sonde read it (a function, an alias, a probe site's symbol): a
/// string that derefs to `str` and compares, hashes and prints as one.
///
/// The names of one symbol table live in one buffer the table shares with
/// every name it hands out: reading 10,000 symbols makes one allocation for
/// their names, not 10,000, and copying a name into a match or a probe site
/// touches that one buffer's count, not a count of its own (which costs a
/// cache miss per name at that scale).
///
/// ```
/// let name = sonde::resolve::Name::from("malloc");
/// assert_eq!(name, "malloc");
/// assert_eq!(name.len(), 6);
/// assert!(name.starts_with("mal"));
/// ```
#[derive(Clone, Default)]
pub struct Name {
    /// `None` while its table is being read (see [`NameBuffer`]), and for
    /// the empty name.
    buf: Option<Arc<String>>,
    start: u32,
    len: u32,
}

impl Name {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.buf {
            // The range was cut on character boundaries of this very buffer;
            // `get` keeps it so (never a panic) were it not.
            Some(b) => b
                .get(self.start as usize..self.start as usize + self.len as usize)
                .unwrap_or_default(),
            None => "",
        }
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Borrow<str>` lookups find it.
        self.as_str().hash(state)
    }
}

impl From<&str> for Name {
    /// A name of its own (one allocation).
    fn from(s: &str) -> Name {
        Name::from(s.to_string())
    }
}

impl From<String> for Name {
    /// A name of its own, in the string's own allocation.
    fn from(s: String) -> Name {
        match u32::try_from(s.len()) {
            Ok(len) if len > 0 => Name {
                buf: Some(Arc::new(s)),
                start: 0,
                len,
            },
            // Longer than 4 GiB cannot come from a mapped symbol table.
            _ => Name::default(),
        }
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name::from(s.as_str())
    }
}

impl From<std::borrow::Cow<'_, str>> for Name {
    fn from(s: std::borrow::Cow<'_, str>) -> Name {
        Name::from(s.into_owned())
    }
}

/// The names of a table as it is read: each added name is a range of one
/// growing string, handed out unbound ([`Name`] reads as empty) and bound
/// to the finished buffer once, by [`NameBuffer::finish`].
#[derive(Default)]
pub(super) struct NameBuffer {
    text: String,
}

impl NameBuffer {
    /// Room for about `bytes` of names.
    pub(super) fn with_capacity(bytes: usize) -> NameBuffer {
        NameBuffer {
            text: String::with_capacity(bytes),
        }
    }

    /// Adds `s`: its name, unbound until [`NameBuffer::finish`]. A name that
    /// would take the buffer past 4 GiB gets a buffer of its own.
    pub(super) fn add(&mut self, s: &str) -> Name {
        let (Ok(start), Ok(len)) = (u32::try_from(self.text.len()), u32::try_from(s.len())) else {
            return Name::from(s);
        };
        if start.checked_add(len).is_none() {
            return Name::from(s);
        }
        self.text.push_str(s);
        Name { buf: None, start, len }
    }

    /// The text of `name`, added here and not yet bound (a bound name reads
    /// as itself).
    pub(super) fn text<'a>(&'a self, name: &'a Name) -> &'a str {
        if name.buf.is_some() {
            return name.as_str();
        }
        self.text
            .get(name.start as usize..name.start as usize + name.len as usize)
            .unwrap_or_default()
    }

    /// Done: binds every name `names` hands out to the finished buffer.
    pub(super) fn finish<'n>(self, names: impl Iterator<Item = &'n mut Name>) {
        let buf = Arc::new(self.text);
        for n in names {
            if n.buf.is_none() && n.len > 0 {
                n.buf = Some(Arc::clone(&buf));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_one_buffer_read_as_themselves_once_bound() {
        let mut b = NameBuffer::default();
        let mut names = [b.add("malloc"), b.add(""), b.add("free"), b.add("ünïcode")];
        assert_eq!(b.text(&names[2]), "free");
        assert_eq!(names[0], "", "unbound");
        b.finish(names.iter_mut());
        let texts: Vec<&str> = names.iter().map(Name::as_str).collect();
        assert_eq!(texts, ["malloc", "", "free", "ünïcode"]);
        assert_eq!(names[0], Name::from("malloc"));
        assert!(names[2] < names[0]);
        let set: std::collections::HashSet<Name> = names.iter().cloned().collect();
        assert!(set.contains("free"));
    }
}
