//! A guard in front of regorus's parser against deeply nested collection literals.
//!
//! regorus parses `[`…`]` and `{`…`}` by trying a comprehension first and backtracking, so the
//! time it takes doubles with every nesting level: 20 levels of `[[[…]]]` cost minutes of CPU,
//! and a few bytes in a policy or `?q=` would pin a core. OPA has no such cliff. Text whose
//! array/object/set literals nest deeper than [`MAX_DEPTH`] is refused before it reaches the
//! parser (strings and comments are skipped, parentheses and calls do not count).

use super::error::{Location, RegoError};

/// Deep enough for real policies (data literals rarely pass 8 levels); shallow enough that the
/// worst case parses in well under a second.
pub const MAX_DEPTH: usize = 16;

/// Refuses `text` if its collection literals nest deeper than [`MAX_DEPTH`].
pub fn check(file: &str, text: &str) -> Result<(), RegoError> {
    let mut depth = 0usize;
    let (mut row, mut col) = (1u32, 0u32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        match c {
            '\n' => {
                row += 1;
                col = 0;
            }
            '#' => {
                // A comment runs to the end of the line.
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    col += 1;
                    match c {
                        '\\' => {
                            chars.next();
                            col += 1;
                        }
                        '"' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    col += 1;
                    if c == '\n' {
                        row += 1;
                        col = 0;
                    } else if c == '`' {
                        break;
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(RegoError {
                        code: "rego_parse_error".into(),
                        message: format!(
                            "array, object and set literals nested deeper than {MAX_DEPTH} levels are not supported"
                        ),
                        location: Some(Location {
                            file: file.to_string(),
                            row,
                            col,
                        }),
                    });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn allows_the_limit_and_refuses_one_more() {
        assert!(check("p", &format!("package p\nx := {}\n", nested(MAX_DEPTH))).is_ok());
        let err = check("p", &format!("package p\nx := {}\n", nested(MAX_DEPTH + 1))).unwrap_err();
        let loc = err.location.unwrap();
        assert_eq!(
            (loc.file.as_str(), loc.row, loc.col),
            ("p", 2, 6 + MAX_DEPTH as u32)
        );
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let deep = "[".repeat(100);
        assert!(check("p", &format!("x := \"{deep}\" # {deep}\ny := `{deep}`\n")).is_ok());
        assert!(check("p", "x := \"a\\\"[[[\"").is_ok());
        // Wide is fine; only depth matters.
        assert!(check("p", &"[1],".repeat(1000)).is_ok());
    }
}
