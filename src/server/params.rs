//! Query-string and URL-path handling shared by the handlers, with OPA's rules: a boolean flag
//! is true when present with an empty value or `true` (any case); path segments are
//! percent-decoded one by one so an encoded `/` stays inside its segment.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The decoded query string of one request.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Params(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == name && (v.is_empty() || v.eq_ignore_ascii_case("true")))
    }

    /// The last value given for `name`, as OPA takes it.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits the URL path after `prefix` into decoded segments (`/v1/data/a/b` -> `["a", "b"]`).
pub fn path_segments(path: &str, prefix: &str) -> Vec<String> {
    path.strip_prefix(prefix)
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .unwrap_or_else(|_| s.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_opa_rules() {
        let p = Params::parse(Some("pretty&metrics=TRUE&provenance=1&explain=full"));
        assert!(p.flag("pretty"));
        assert!(p.flag("metrics"));
        assert!(!p.flag("provenance"));
        assert!(!p.flag("instrument"));
        assert_eq!(p.last("explain"), Some("full"));
    }

    #[test]
    fn segments_are_decoded_individually() {
        assert_eq!(
            path_segments("/v1/data/a%2Fb/c%20d", "/v1/data"),
            vec!["a/b".to_string(), "c d".to_string()]
        );
        assert!(path_segments("/v1/data", "/v1/data").is_empty());
    }
}
