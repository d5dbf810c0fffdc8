//! The active configuration as `GET /v1/config` shows it: the configuration as given (after
//! `--set` and `${ENV}`), with every service's `credentials` and every key's private material
//! removed, and OPA's injected values (`labels.id`, `labels.version`, the default decisions).

use serde_json::{Map, Value as Json};

use super::Config;

impl Config {
    pub fn active(&self) -> Json {
        let mut out = match &self.raw {
            Json::Object(map) => map.clone(),
            _ => Map::new(),
        };
        match out.get_mut("services") {
            Some(Json::Object(services)) => services.values_mut().for_each(strip_credentials),
            Some(Json::Array(services)) => services.iter_mut().for_each(strip_credentials),
            _ => {}
        }
        if let Some(Json::Object(keys)) = out.get_mut("keys") {
            for key in keys.values_mut() {
                if let Json::Object(key) = key {
                    key.remove("key");
                    key.remove("private_key");
                }
            }
        }
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        out.insert("labels".into(), Json::Object(labels));
        // OPA reports the decisions as configured, injecting only the missing ones.
        for (key, default) in [
            ("default_decision", super::DEFAULT_DECISION),
            (
                "default_authorization_decision",
                super::DEFAULT_AUTHORIZATION_DECISION,
            ),
        ] {
            out.entry(key)
                .or_insert_with(|| Json::String(default.to_string()));
        }
        Json::Object(out)
    }
}

fn strip_credentials(service: &mut Json) {
    if let Json::Object(service) = service {
        service.remove("credentials");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_and_private_keys_are_removed() {
        let c = Config::from_raw(json!({
            "services": [{"name": "s", "url": "http://s", "credentials": {"bearer": {"token": "secret"}}}],
            "keys": {"k": {"algorithm": "RS256", "key": "pub", "private_key": "priv"}},
            "labels": {"team": "a", "id": "mine"},
            "default_decision": "x/y",
        }))
        .unwrap();
        let a = c.active();
        assert_eq!(a["services"], json!([{"name": "s", "url": "http://s"}]));
        assert_eq!(a["keys"], json!({"k": {"algorithm": "RS256"}}));
        assert_eq!(a["labels"]["team"], "a");
        assert_eq!(a["labels"]["id"], json!(c.instance_id));
        assert_eq!(a["labels"]["version"], crate::build::VERSION);
        assert_eq!(a["default_decision"], "x/y");
        assert_eq!(a["default_authorization_decision"], "/system/authz/allow");
        assert!(!a.to_string().contains("secret"));
        assert!(!a.to_string().contains("priv"));
    }
}
