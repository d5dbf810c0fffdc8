//! Base data that collides with a rule, which OPA refuses and regorus would silently accept.
//!
//! OPA rejects a policy/data combination where a rule's path also holds base data: the write
//! (or the module) fails with "conflicting rule for data path <p> found". regorus instead lets
//! the data shadow the rule, so decisions would quietly change. Every snapshot runs this check.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::document;
use super::error::RegoError;
use super::modules::ModuleInfo;

/// OPA's `storage.NonEmpty`: data exists at `path`, or the deepest existing ancestor below the
/// root is not an object (so a write at `path` would have replaced something).
fn non_empty(data: &Json, path: &[String]) -> bool {
    if document::get(data, path).is_some() {
        return true;
    }
    (1..path.len())
        .rev()
        .find_map(|i| document::get(data, &path[..i]))
        .is_some_and(|v| !v.is_object())
}

/// One error per rule path that also holds base data, located at the first rule defining it.
pub fn check(modules: &BTreeMap<String, ModuleInfo>, data: &Json) -> Vec<RegoError> {
    let mut first_rule: BTreeMap<&[String], &super::modules::RuleEntry> = BTreeMap::new();
    for rule in modules.values().flat_map(|m| &m.rules) {
        first_rule.entry(rule.path.as_slice()).or_insert(rule);
    }
    first_rule
        .into_iter()
        .filter(|(path, _)| !path.is_empty() && non_empty(data, path))
        .map(|(path, rule)| RegoError {
            code: "rego_compile_error".into(),
            message: format!("conflicting rule for data path {} found", path.join("/")),
            location: Some(rule.location.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn modules(rego: &str) -> BTreeMap<String, ModuleInfo> {
        let mut engine = regorus::Engine::new();
        engine.add_policy("testmod".into(), rego.into()).unwrap();
        let info = ModuleInfo::from_module("testmod", &engine.get_modules()[0]);
        [("testmod".to_string(), info)].into_iter().collect()
    }

    #[test]
    fn data_at_or_below_a_rule_conflicts() {
        let m = modules("package x.y\np = 1\n");
        for data in [
            json!({"x": {"y": {"p": "xxx"}}}),
            json!({"x": {"y": {"p": {"a": 1}}}}),
            json!({"x": {"y": 5}}),
        ] {
            let errs = check(&m, &data);
            assert_eq!(errs.len(), 1, "{data}");
            assert_eq!(
                errs[0].message,
                "conflicting rule for data path x/y/p found"
            );
            let loc = errs[0].location.as_ref().unwrap();
            assert_eq!((loc.file.as_str(), loc.row), ("testmod", 2));
        }
        let m = modules("package x.y\np = 1\nq = 2\n");
        assert_eq!(check(&m, &json!({"x": {"y": 5}})).len(), 2);
    }

    #[test]
    fn sibling_data_does_not_conflict() {
        let m = modules("package x.y\np = 1\n");
        assert!(check(&m, &json!({"x": {"y": {"other": 1}}, "z": 1})).is_empty());
        assert!(check(&m, &json!({})).is_empty());
    }
}
