//! Installing a set of .debs in stages, as apt does, for the corpus's
//! resolve check and its scenarios alike.
//!
//! Why: one `dpkg -i` of a whole closure unpacks every archive before it
//! configures any, and dpkg refuses to unpack a package whose Pre-Depends
//! is unpacked but not yet configured ("pre-dependency problem - not
//! installing python3-minimal"). Every package needing python3, cron or
//! logrotate failed that way on minbase, though none of them fails by
//! itself. So a set is installed in stages: a package comes at least one
//! stage after what it pre-depends on, and in no earlier stage than what it
//! depends on; each stage is one `dpkg -i`, configured before the next.

/// One .deb's control fields that order an install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    /// The `Pre-Depends` field as written (empty: none).
    pub pre_depends: String,
    /// The `Depends` field as written (empty: none).
    pub depends: String,
}

/// The package names a relation field names, alternatives included, with
/// versions and architecture qualifiers left out: `a (>= 1), b:any | c`
/// gives a, b and c.
pub fn names(field: &str) -> impl Iterator<Item = &str> {
    field.split([',', '|']).filter_map(|alt| {
        let name = alt.split_whitespace().next()?;
        Some(name.split(':').next().unwrap_or(name))
    })
}

/// The stage of each of `debs` (same order), from 0. A relation to a
/// package outside the set (already installed) orders nothing. A cycle of
/// Pre-Depends, which Debian policy forbids, stops rising at the set's size.
pub fn stages(debs: &[Control]) -> Vec<usize> {
    let index = |n: &str| debs.iter().position(|d| d.package == n);
    let pre: Vec<Vec<usize>> = (debs.iter())
        .map(|d| names(&d.pre_depends).filter_map(index).collect())
        .collect();
    let dep: Vec<Vec<usize>> = (debs.iter())
        .map(|d| names(&d.depends).filter_map(index).collect())
        .collect();
    let mut stage = vec![0; debs.len()];
    for _ in 0..=debs.len() {
        let mut changed = false;
        for x in 0..debs.len() {
            let need = (pre[x].iter().map(|&y| stage[y] + 1))
                .chain(dep[x].iter().map(|&y| stage[y]))
                .fold(stage[x], usize::max)
                .min(debs.len());
            if need != stage[x] {
                stage[x] = need;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    stage
}

/// `items` grouped by stage, stage 0 first, each group in `items`' order.
pub fn in_stages<T: Clone>(items: &[T], stage: &[usize]) -> Vec<Vec<T>> {
    let last = stage.iter().copied().max().unwrap_or(0);
    (0..=last)
        .map(|s| {
            (items.iter().zip(stage))
                .filter(|(_, st)| **st == s)
                .map(|(i, _)| i.clone())
                .collect::<Vec<T>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// The shell command that installs `groups` (from [`in_stages`]): one
/// `dpkg -i` per stage, each only after the one before succeeded, every
/// path single-quoted.
pub fn script(groups: &[Vec<String>]) -> String {
    let quote = |n: &String| format!("'{}'", n.replace('\'', r"'\''"));
    (groups.iter())
        .map(|g| {
            format!(
                "dpkg -i {}",
                g.iter().map(quote).collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(package: &str, pre_depends: &str, depends: &str) -> Control {
        Control {
            package: package.into(),
            pre_depends: pre_depends.into(),
            depends: depends.into(),
        }
    }

    #[test]
    fn pre_depends_come_a_stage_earlier_and_depends_no_later() {
        // python3's chain on minbase, in the order the closure lists it.
        let set = [
            deb("python3.11-minimal", "", "libc6 (>= 2.35)"),
            deb("libpython3-stdlib", "", ""),
            deb("python3-minimal", "python3.11-minimal (>= 3.11.2-1~)", ""),
            deb(
                "python3",
                "python3-minimal (= 3.11.2-1+b1)",
                "libpython3-stdlib",
            ),
            deb("ufw", "", "iptables, python3:any"),
            deb("iptables", "", ""),
        ];
        let s = stages(&set);
        assert_eq!(s, [0, 0, 1, 2, 2, 0]);
        let names: Vec<&str> = set.iter().map(|d| d.package.as_str()).collect();
        assert_eq!(
            in_stages(&names, &s),
            [
                vec!["python3.11-minimal", "libpython3-stdlib", "iptables"],
                vec!["python3-minimal"],
                vec!["python3", "ufw"],
            ]
        );
        let groups = [
            vec!["/in/a b.deb".to_string()],
            vec!["/in/it's.deb".to_string()],
        ];
        assert_eq!(
            script(&groups),
            r"dpkg -i '/in/a b.deb' && dpkg -i '/in/it'\''s.deb'"
        );
    }

    #[test]
    fn a_set_without_pre_depends_is_one_stage_and_cycles_end() {
        let plain = [deb("a", "", "b"), deb("b", "", "a | c"), deb("c", "", "")];
        assert_eq!(stages(&plain), [0, 0, 0]);
        assert_eq!(in_stages(&[1, 2, 3], &stages(&plain)), [vec![1, 2, 3]]);
        let bad = [deb("x", "y", ""), deb("y", "x", "")];
        assert!(stages(&bad).iter().all(|&s| s <= 2));
        assert!(in_stages::<u8>(&[], &[]).is_empty());
    }

    #[test]
    fn names_leave_out_versions_qualifiers_and_keep_alternatives() {
        let n: Vec<&str> = names("a (>= 1), b:any | c, ").collect();
        assert_eq!(n, ["a", "b", "c"]);
    }
}
