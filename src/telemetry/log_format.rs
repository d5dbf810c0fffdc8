//! OPA's log line shapes, so log pipelines built for OPA parse regent's lines unchanged.
//!
//! OPA logs through logrus: `json` is one object per line with `level` (`debug`, `info`,
//! `warning`, `error`), `msg`, `time` (RFC 3339, seconds) and the event's fields, keys sorted;
//! `json-pretty` is the same object indented; `text` is `time=… level=… msg=… key=value…`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::SecondsFormat;
use serde_json::Value as Json;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How a log line is laid out (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Text,
    Json,
    JsonPretty,
}

pub struct OpaFormat(pub Layout);

/// An event's fields, `message` renamed to OPA's `msg`.
#[derive(Default)]
struct Fields(BTreeMap<String, Json>);

impl Fields {
    fn put(&mut self, field: &Field, value: Json) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.0.insert(name.to_string(), value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Json::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Json::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Json::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Json::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Json::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Json::Bool(value));
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// logrus quotes a text value unless it is made only of "safe" characters.
fn text_value(value: &Json) -> String {
    match value {
        Json::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
            if plain {
                s.clone()
            } else {
                Json::String(s.clone()).to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Renders one line (without the trailing newline).
fn render(
    layout: Layout,
    level: &Level,
    time: String,
    mut fields: BTreeMap<String, Json>,
) -> String {
    let level = level_name(level);
    match layout {
        Layout::Text => {
            let msg = fields.remove("msg").unwrap_or(Json::String(String::new()));
            let mut line = format!(
                "time={} level={level} msg={}",
                text_value(&Json::String(time)),
                text_value(&msg)
            );
            for (key, value) in &fields {
                line.push_str(&format!(" {key}={}", text_value(value)));
            }
            line
        }
        Layout::Json | Layout::JsonPretty => {
            fields.insert("level".into(), Json::from(level));
            fields.insert("time".into(), Json::String(time));
            // A BTreeMap serialises as an object in key order: the sorted keys logrus writes.
            if layout == Layout::JsonPretty {
                serde_json::to_string_pretty(&fields)
            } else {
                serde_json::to_string(&fields)
            }
            .expect("log fields serialise")
        }
    }
}

/// The current time as logrus writes it (RFC 3339, whole seconds, local zone). Every request
/// logs two lines, so the text is made once per second per thread, not per line.
fn now_text() -> String {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs || cached.1.is_empty() {
            let at: chrono::DateTime<chrono::Local> = now.into();
            cached.1 = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            cached.0 = secs;
        }
        cached.1.clone()
    })
}

impl<S, N> FormatEvent<S, N> for OpaFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = now_text();
        writeln!(
            writer,
            "{}",
            render(self.0, event.metadata().level(), time, fields.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> BTreeMap<String, Json> {
        [
            ("msg", json!("Sent response.")),
            ("req_id", json!(1)),
            ("client_addr", json!("127.0.0.1:5000")),
            ("resp_duration", json!(0.5)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn json_lines_use_opa_keys_sorted() {
        let line = render(
            Layout::Json,
            &Level::INFO,
            "2024-01-02T03:04:05Z".into(),
            fields(),
        );
        assert_eq!(
            line,
            r#"{"client_addr":"127.0.0.1:5000","level":"info","msg":"Sent response.","req_id":1,"resp_duration":0.5,"time":"2024-01-02T03:04:05Z"}"#
        );
        let pretty = render(Layout::JsonPretty, &Level::WARN, "t".into(), fields());
        assert!(pretty.contains("\n  \"level\": \"warning\""));
    }

    #[test]
    fn text_lines_read_like_logrus() {
        let line = render(
            Layout::Text,
            &Level::INFO,
            "2024-01-02T03:04:05Z".into(),
            fields(),
        );
        assert_eq!(
            line,
            "time=\"2024-01-02T03:04:05Z\" level=info msg=\"Sent response.\" \
             client_addr=\"127.0.0.1:5000\" req_id=1 resp_duration=0.5"
        );
    }

    #[test]
    fn time_text_is_rfc3339_seconds_of_now() {
        let text = now_text();
        let at = chrono::DateTime::parse_from_rfc3339(&text).expect("RFC 3339");
        assert!(!text.contains('.'), "{text}");
        let drift = (chrono::Utc::now().timestamp() - at.timestamp()).abs();
        assert!(drift <= 1, "{text}");
        assert_eq!(now_text().len(), text.len());
    }
}
