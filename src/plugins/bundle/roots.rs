//! Bundle roots: slash-separated paths into `data` that a bundle owns (`""` owns everything).
//!
//! Containment and overlap are decided segment by segment, so root `a/b` owns `a/b/c` but not
//! `a/bc`.

/// The segments of a root or path (`"a/b"` -> `["a", "b"]`, `""` -> `[]`).
pub fn segments(root: &str) -> Vec<&str> {
    root.split('/').filter(|s| !s.is_empty()).collect()
}

/// True when `path` lies at or under `root`.
pub fn contains(root: &str, path: &[&str]) -> bool {
    let root = segments(root);
    root.len() <= path.len() && root.iter().zip(path).all(|(a, b)| a == b)
}

/// True when any of `roots` owns `path`.
pub fn any_contains(roots: &[String], path: &[&str]) -> bool {
    roots.iter().any(|r| contains(r, path))
}

/// True when one root lies at or under the other.
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (segments(a), segments(b));
    a.iter().zip(&b).all(|(x, y)| x == y)
}

/// Go's `%v` rendering of a string slice, as OPA's messages print roots: `[a b/c]`.
pub fn display(roots: &[String]) -> String {
    format!("[{}]", roots.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_is_by_segment() {
        assert!(contains("a/b", &["a", "b", "c"]));
        assert!(contains("a/b", &["a", "b"]));
        assert!(!contains("a/b", &["a", "bc"]));
        assert!(!contains("a/b", &["a"]));
        assert!(contains("", &[]));
        assert!(contains("", &["x"]));
    }

    #[test]
    fn overlap_is_symmetric() {
        assert!(overlap("a", "a/b"));
        assert!(overlap("a/b", "a"));
        assert!(overlap("", "z"));
        assert!(!overlap("a/b", "a/c"));
        assert!(!overlap("ab", "a"));
        assert_eq!(display(&["a".into(), "b/c".into()]), "[a b/c]");
    }
}
