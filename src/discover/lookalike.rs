//! Look-alike addresses: two addresses in the same domain whose local parts
//! differ by one or two edits (a missing, added, changed or swapped letter:
//! `sikkerpost@` beside `sikkerepost@`). Such an address catches the mail of
//! everyone who mistypes the real one, so it must be probed as `bounce` (it
//! must refuse mail) or `forward` (it must reach the real mailbox).
//! Optimal string alignment distance from `strsim` counts a swap as one edit.

/// The edit distance of two local parts if they are look-alikes: 1 for
/// parts of 3+ characters, 2 only when both have 6 or more (short names like
/// `it@`/`hr@` are legitimately close).
pub fn distance(a: &str, b: &str) -> Option<usize> {
    let (la, da) = a.rsplit_once('@')?;
    let (lb, db) = b.rsplit_once('@')?;
    if da != db || la == lb {
        return None;
    }
    let n = la.chars().count().min(lb.chars().count());
    let d = strsim::osa_distance(la, lb);
    match d {
        1 if n >= 3 => Some(1),
        2 if n >= 6 => Some(2),
        _ => None,
    }
}

/// Every look-alike pair among `addrs` (sorted, each pair once).
pub fn pairs(addrs: &[String]) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        for b in &addrs[i + 1..] {
            if let Some(d) = distance(a, b) {
                out.push((a.clone(), b.clone(), d));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes() {
        assert_eq!(distance("sikkerpost@x.dk", "sikkerepost@x.dk"), Some(1));
        assert_eq!(distance("sikkerpost@x.dk", "siekkrpost@x.dk"), Some(2));
        assert_eq!(
            distance("sikkerpost@x.dk", "sikekrpost@x.dk"),
            Some(1),
            "a swap is one edit"
        );
        assert_eq!(distance("sikkerpost@x.dk", "sikkerepost@y.dk"), None, "other domain");
        assert_eq!(distance("it@x.dk", "hr@x.dk"), None);
        assert_eq!(distance("post@x.dk", "post@x.dk"), None);
        assert_eq!(distance("borger@x.dk", "social@x.dk"), None);
    }
}
