//! What an install did to a tree, piuparts style: the paths added, changed
//! and removed. One type for both places that ask: a snapshot compared
//! with the tree now (`backstop-agent snapshot diff`) and a shadow's
//! overlay upper directory (`shadow run`). Its listing is written here, once.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// Paths as the root sees them (`/etc/foo`), each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl FsDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Each path with its mark (`+` added, `~` changed, `-` removed), in
    /// that order.
    pub fn marked(&self) -> impl Iterator<Item = (char, &str)> {
        self.added
            .iter()
            .map(|p| ('+', p.as_str()))
            .chain(self.changed.iter().map(|p| ('~', p.as_str())))
            .chain(self.removed.iter().map(|p| ('-', p.as_str())))
    }

    /// The listing, one `MARK PATH` line after `indent` each, every line
    /// ending in a newline.
    pub fn listing(&self, indent: &str) -> String {
        let mut out = String::new();
        for (m, p) in self.marked() {
            let _ = writeln!(out, "{indent}{m} {p}");
        }
        out
    }
}

/// The listing with no indent and no newline after the last line.
impl fmt::Display for FsDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (m, p)) in self.marked().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{m} {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_marks_each_path_in_order() {
        let d = FsDiff {
            added: vec!["/a".into(), "/b".into()],
            changed: vec!["/c".into()],
            removed: vec!["/d".into()],
        };
        assert_eq!(d.to_string(), "+ /a\n+ /b\n~ /c\n- /d");
        assert_eq!(d.listing("  "), "  + /a\n  + /b\n  ~ /c\n  - /d\n");
        assert!(!d.is_empty());
        assert!(FsDiff::default().is_empty());
        assert_eq!(FsDiff::default().to_string(), "");
    }
}
