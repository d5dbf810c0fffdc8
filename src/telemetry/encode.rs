//! Encoders from the [`MetricFamily`] model: Prometheus text 0.0.4 (what OPA serves), OpenMetrics
//! 1.0 (when the scraper's `Accept` asks for it) and the protobuf-JSON form OPA's status payload
//! carries under `metrics.prometheus`.
//!
//! Numbers are written as client_golang writes them (Go's shortest `%g`: `1e-06`, `0.0001`,
//! `2.905512e+06`), so `le` label values and samples match OPA's byte for byte. Families are sorted
//! by name and empty families are left out, as client_golang's gatherer does.
//!
//! OpenMetrics requires a counter's samples to end in `_total`. A counter whose name already ends
//! in `_total` (`process_cpu_seconds_total`) is written as family `process_cpu_seconds` with sample
//! `process_cpu_seconds_total`: the stored series name is unchanged. A counter without the suffix
//! (OPA's `http_request_cancellations`, `bundle_loaded_counter`) is written with type `unknown`
//! instead, so the series Prometheus stores keeps OPA's name whichever format it negotiated;
//! Prometheus asks for OpenMetrics first by default, and renaming those series would break the
//! dashboards built on OPA.

use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};

use super::family::{Exemplar, Metric, MetricFamily, MetricType, MetricValue};

/// `Content-Type` of Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `Content-Type` of the Prometheus protobuf format (length-delimited `MetricFamily` messages).
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// An exposition format `/metrics` can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus protobuf, the only format that carries native histograms; Prometheus asks for
    /// it first when native histograms are enabled on its side.
    Protobuf,
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics text; `version` is the one the scraper asked for (`1.0.0` or `0.0.1`, which
    /// Prometheus parses alike).
    OpenMetrics { version: &'static str },
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::Protobuf => PROTOBUF_CONTENT_TYPE,
            Format::OpenMetrics { version: "0.0.1" } => {
                "application/openmetrics-text; version=0.0.1; charset=utf-8"
            }
            Format::OpenMetrics { .. } => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }

    /// Picks the format from an `Accept` header: the highest-quality entry we can serve wins
    /// (ties keep header order); text 0.0.4 when nothing matches or no header was sent.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut offers: Vec<(f32, usize, Format)> = Vec::new();
        for (position, entry) in accept.split(',').enumerate() {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut quality = 1.0f32;
            let mut version = None;
            let mut proto = None;
            let mut encoding = None;
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => quality = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_string()),
                    "proto" => proto = Some(value.to_string()),
                    "encoding" => encoding = Some(value.to_ascii_lowercase()),
                    _ => {}
                }
            }
            if quality <= 0.0 {
                continue;
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0")) => {
                    Format::OpenMetrics { version: "1.0.0" }
                }
                ("application/openmetrics-text", Some("0.0.1")) => {
                    Format::OpenMetrics { version: "0.0.1" }
                }
                ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", _) => Format::Text,
                ("application/vnd.google.protobuf", _)
                    if proto.as_deref() == Some("io.prometheus.client.MetricFamily")
                        && encoding.as_deref() == Some("delimited") =>
                {
                    Format::Protobuf
                }
                _ => continue,
            };
            offers.push((quality, position, format));
        }
        offers
            .into_iter()
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
            .map_or(Format::Text, |(_, _, format)| format)
    }
}

/// Encodes `families` in `format`.
pub fn encode(families: &[MetricFamily], format: Format) -> Vec<u8> {
    match format {
        Format::Text => text(families).into_bytes(),
        Format::OpenMetrics { .. } => openmetrics(families).into_bytes(),
        Format::Protobuf => super::protobuf::encode(families),
    }
}

/// A classic histogram: cumulative `(upper bound, count)` buckets without `+Inf`, count, sum.
pub(super) type Classic<'a> = (&'a [(f64, u64)], u64, f64);

/// The classic histogram in a histogram value.
pub(super) fn classic(value: &MetricValue) -> Option<Classic<'_>> {
    match value {
        MetricValue::Histogram {
            buckets,
            count,
            sum,
        } => Some((buckets, *count, *sum)),
        MetricValue::RichHistogram(h) => Some((&h.buckets, h.count, h.sum)),
        MetricValue::Counter(_) | MetricValue::Gauge(_) => None,
    }
}

/// Families sorted by name, empty ones dropped, same-named ones merged (the first one's help and
/// type win), each family's metrics sorted by their labels.
pub(super) fn gathered(families: &[MetricFamily]) -> Vec<(&MetricFamily, Vec<&Metric>)> {
    let mut sorted: Vec<&MetricFamily> =
        families.iter().filter(|f| !f.metrics.is_empty()).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<(&MetricFamily, Vec<&Metric>)> = Vec::with_capacity(sorted.len());
    for family in sorted {
        match out.last_mut() {
            Some((first, metrics)) if first.name == family.name => metrics.extend(&family.metrics),
            _ => out.push((family, family.metrics.iter().collect())),
        }
    }
    for (_, metrics) in &mut out {
        metrics.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    out
}

/// Prometheus text format 0.0.4, as client_golang writes it.
pub fn text(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(8192);
    for (family, metrics) in gathered(families) {
        let name = family.name.as_str();
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_help(&mut out, &family.help, false);
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push_str(match family.kind {
            MetricType::Counter => " counter\n",
            MetricType::Gauge => " gauge\n",
            MetricType::Histogram => " histogram\n",
        });
        for metric in metrics {
            match &metric.value {
                MetricValue::Counter(v) | MetricValue::Gauge(v) => {
                    sample(&mut out, name, "", &metric.labels, None);
                    write_go_float(&mut out, *v);
                    out.push('\n');
                }
                value => {
                    let (buckets, count, sum) = classic(value).expect("counters matched above");
                    let mut le = String::new();
                    for (bound, cumulative) in buckets {
                        le.clear();
                        write_go_float(&mut le, *bound);
                        sample(&mut out, name, "_bucket", &metric.labels, Some(&le));
                        write_go_float(&mut out, *cumulative as f64);
                        out.push('\n');
                    }
                    sample(&mut out, name, "_bucket", &metric.labels, Some("+Inf"));
                    write_go_float(&mut out, count as f64);
                    out.push('\n');
                    sample(&mut out, name, "_sum", &metric.labels, None);
                    write_go_float(&mut out, sum);
                    out.push('\n');
                    sample(&mut out, name, "_count", &metric.labels, None);
                    write_go_float(&mut out, count as f64);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// OpenMetrics 1.0 text, ending in `# EOF`.
pub fn openmetrics(families: &[MetricFamily]) -> String {
    let mut out = String::with_capacity(8192);
    for (family, metrics) in gathered(families) {
        let name = family.name.as_str();
        let (family_name, kind, sample_suffix) = match family.kind {
            MetricType::Counter => match name.strip_suffix("_total") {
                Some(stem) => (stem, "counter", "_total"),
                None => (name, "unknown", ""),
            },
            MetricType::Gauge => (name, "gauge", ""),
            MetricType::Histogram => (name, "histogram", ""),
        };
        out.push_str("# TYPE ");
        out.push_str(family_name);
        out.push(' ');
        out.push_str(kind);
        out.push_str("\n# HELP ");
        out.push_str(family_name);
        out.push(' ');
        escape_help(&mut out, &family.help, true);
        out.push('\n');
        for metric in metrics {
            match &metric.value {
                MetricValue::Counter(v) | MetricValue::Gauge(v) => {
                    sample(&mut out, family_name, sample_suffix, &metric.labels, None);
                    write_om_float(&mut out, *v);
                    out.push('\n');
                }
                value => {
                    let (buckets, count, sum) = classic(value).expect("counters matched above");
                    let exemplars = match value {
                        MetricValue::RichHistogram(h) => h.exemplars.as_slice(),
                        _ => &[],
                    };
                    let mut le = String::new();
                    for (i, (bound, cumulative)) in buckets.iter().enumerate() {
                        le.clear();
                        write_om_float(&mut le, *bound);
                        sample(&mut out, family_name, "_bucket", &metric.labels, Some(&le));
                        let _ = write!(out, "{cumulative}");
                        write_exemplar(&mut out, exemplars.get(i));
                        out.push('\n');
                    }
                    sample(
                        &mut out,
                        family_name,
                        "_bucket",
                        &metric.labels,
                        Some("+Inf"),
                    );
                    let _ = write!(out, "{count}");
                    write_exemplar(&mut out, exemplars.get(buckets.len()));
                    out.push('\n');
                    sample(&mut out, family_name, "_sum", &metric.labels, None);
                    write_om_float(&mut out, sum);
                    out.push('\n');
                    sample(&mut out, family_name, "_count", &metric.labels, None);
                    let _ = writeln!(out, "{count}");
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Appends ` # {labels} value timestamp` for a bucket's exemplar, if it has one.
fn write_exemplar(out: &mut String, exemplar: Option<&Option<Exemplar>>) {
    let Some(Some(exemplar)) = exemplar else {
        return;
    };
    out.push_str(" # ");
    // An empty name writes just the braces; exemplars always have at least one label.
    sample(out, "", "", &exemplar.labels, None);
    write_om_float(out, exemplar.value);
    out.push(' ');
    let _ = write!(out, "{:.3}", exemplar.timestamp);
}

/// Writes `name<suffix>{labels[,le="..."]} ` (the value follows).
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(String, String)],
    le: Option<&str>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let pairs = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le.map(|le| ("le", le)));
        for (key, value) in pairs {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(key);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

/// HELP text escaping: backslash and newline; OpenMetrics also escapes double quotes.
fn escape_help(out: &mut String, help: &str, quotes: bool) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Writes `f` as client_golang's text encoder does: Go's `strconv.FormatFloat(f, 'g', -1, 64)`
/// (shortest digits; exponent form below 1e-4 and from 1e6 up, with at least two exponent digits),
/// `+Inf`, `-Inf`, `NaN`, and `0` for either zero.
pub fn write_go_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if f == 0.0 {
        out.push('0');
        return;
    }
    if f.fract() == 0.0 && f.abs() < 1e6 {
        // Integers below 1e6 print as themselves; the common case for counts.
        let _ = write!(out, "{}", f as i64);
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    if f < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exponent) {
        out.push(digits[0] as char);
        if digits.len() > 1 {
            out.push('.');
            digits[1..].iter().for_each(|d| out.push(*d as char));
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
        return;
    }
    // Plain decimal: `point` digits before the decimal point.
    let point = exponent + 1;
    let digit = |i: i32| -> char {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .map_or('0', |d| *d as char)
    };
    if point > 0 {
        (0..point).for_each(|i| out.push(digit(i)));
    } else {
        out.push('0');
    }
    let decimals = digits.len() as i32 - point;
    if decimals > 0 {
        out.push('.');
        (0..decimals).for_each(|i| out.push(digit(point + i)));
    }
}

/// OpenMetrics numbers: as [`write_go_float`], with `.0` added to integral values so `le` values
/// are canonical (`1.0`), as client_golang's OpenMetrics encoder writes them.
fn write_om_float(out: &mut String, f: f64) {
    let start = out.len();
    write_go_float(out, f);
    if f.is_finite() && !out[start..].contains(['.', 'e']) {
        out.push_str(".0");
    }
}

/// One family in the protobuf-JSON form (Go `jsonpb`) that OPA's status payload embeds:
/// `{"name","help","type","metric":[{"label":[{"name","value"}],"counter"|"gauge"|"histogram":…}]}`.
/// 64-bit counts are strings, floats are numbers (`"NaN"`, `"Infinity"`, `"-Infinity"` when not
/// finite), the `+Inf` bucket is implicit and an empty label list is left out, as jsonpb does.
pub fn family_json(family: &MetricFamily) -> Json {
    let metrics: Vec<Json> = family
        .metrics
        .iter()
        .map(|metric| {
            let mut out = Map::new();
            if !metric.labels.is_empty() {
                let labels: Vec<Json> = metric
                    .labels
                    .iter()
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect();
                out.insert("label".into(), Json::Array(labels));
            }
            let (key, value) = match &metric.value {
                MetricValue::Counter(v) => ("counter", json!({"value": json_number(*v)})),
                MetricValue::Gauge(v) => ("gauge", json!({"value": json_number(*v)})),
                value => {
                    let (buckets, count, sum) = classic(value).expect("counters matched above");
                    let buckets: Vec<Json> = buckets
                        .iter()
                        .map(|(bound, cumulative)| {
                            json!({
                                "cumulativeCount": cumulative.to_string(),
                                "upperBound": json_number(*bound),
                            })
                        })
                        .collect();
                    (
                        "histogram",
                        json!({
                            "sampleCount": count.to_string(),
                            "sampleSum": json_number(sum),
                            "bucket": buckets,
                        }),
                    )
                }
            };
            out.insert(key.into(), value);
            Json::Object(out)
        })
        .collect();
    json!({
        "name": family.name,
        "help": family.help,
        "type": match family.kind {
            MetricType::Counter => "COUNTER",
            MetricType::Gauge => "GAUGE",
            MetricType::Histogram => "HISTOGRAM",
        },
        "metric": metrics,
    })
}

/// The value of the status payload's `metrics.prometheus` object built from a registry: every
/// non-empty family under its name, as OPA's provider does (`{"http_request_duration_seconds":
/// {"name": …, "type": "HISTOGRAM", …}, …}`). The status plugin adds OPA's plain global counters
/// (`counter_*`) to the same object.
pub fn status_json(families: &[MetricFamily]) -> Json {
    let mut out = Map::new();
    for (family, metrics) in gathered(families) {
        let merged = MetricFamily {
            name: family.name.clone(),
            help: family.help.clone(),
            kind: family.kind,
            metrics: metrics.into_iter().cloned().collect(),
        };
        out.insert(family.name.clone(), family_json(&merged));
    }
    Json::Object(out)
}

fn json_number(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(f: f64) -> String {
        let mut s = String::new();
        write_go_float(&mut s, f);
        s
    }

    fn om(f: f64) -> String {
        let mut s = String::new();
        write_om_float(&mut s, f);
        s
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sample_families() -> Vec<MetricFamily> {
        vec![
            MetricFamily {
                name: "http_request_duration_seconds".into(),
                help: "A histogram of duration for requests.".into(),
                kind: MetricType::Histogram,
                metrics: vec![Metric {
                    labels: labels(&[("code", "200"), ("handler", "v1/data"), ("method", "post")]),
                    value: MetricValue::Histogram {
                        buckets: vec![(1e-06, 0), (0.001, 2), (1.0, 3)],
                        count: 4,
                        sum: 2.5,
                    },
                }],
            },
            MetricFamily {
                name: "bundle_loaded_counter".into(),
                help: "Counter for the bundle loaded.".into(),
                kind: MetricType::Counter,
                metrics: vec![Metric {
                    labels: labels(&[("name", "a\"b\\c\nd")]),
                    value: MetricValue::Counter(3.0),
                }],
            },
            MetricFamily {
                name: "process_cpu_seconds_total".into(),
                help: "Total user and system CPU time spent in seconds.".into(),
                kind: MetricType::Counter,
                metrics: vec![Metric {
                    labels: vec![],
                    value: MetricValue::Counter(0.25),
                }],
            },
            MetricFamily {
                name: "empty".into(),
                help: "never observed".into(),
                kind: MetricType::Gauge,
                metrics: vec![],
            },
        ]
    }

    #[test]
    fn floats_format_as_go_g() {
        let cases = [
            (1e-06, "1e-06"),
            (5e-06, "5e-06"),
            (1e-05, "1e-05"),
            (5e-05, "5e-05"),
            (0.0001, "0.0001"),
            (0.0005, "0.0005"),
            (0.001, "0.001"),
            (0.01, "0.01"),
            (0.1, "0.1"),
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "0"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (2905512.0, "2.905512e+06"),
            (123456789.0, "1.23456789e+08"),
            (0.00012, "0.00012"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (1234.5678, "1234.5678"),
            (1e21, "1e+21"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (1.7e-300, "1.7e-300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, want) in cases {
            assert_eq!(go(value), want, "{value:e}");
        }
        assert_eq!(om(1.0), "1.0");
        assert_eq!(om(1e-06), "1e-06");
        assert_eq!(om(0.5), "0.5");
        assert_eq!(om(f64::INFINITY), "+Inf");
    }

    #[test]
    fn text_format_matches_client_golang() {
        let want = "\
# HELP bundle_loaded_counter Counter for the bundle loaded.
# TYPE bundle_loaded_counter counter
bundle_loaded_counter{name=\"a\\\"b\\\\c\\nd\"} 3
# HELP http_request_duration_seconds A histogram of duration for requests.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"1e-06\"} 0
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"0.001\"} 2
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"1\"} 3
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"+Inf\"} 4
http_request_duration_seconds_sum{code=\"200\",handler=\"v1/data\",method=\"post\"} 2.5
http_request_duration_seconds_count{code=\"200\",handler=\"v1/data\",method=\"post\"} 4
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
";
        assert_eq!(text(&sample_families()), want);
    }

    #[test]
    fn openmetrics_keeps_series_names() {
        let want = "\
# TYPE bundle_loaded_counter unknown
# HELP bundle_loaded_counter Counter for the bundle loaded.
bundle_loaded_counter{name=\"a\\\"b\\\\c\\nd\"} 3.0
# TYPE http_request_duration_seconds histogram
# HELP http_request_duration_seconds A histogram of duration for requests.
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"1e-06\"} 0
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"0.001\"} 2
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"1.0\"} 3
http_request_duration_seconds_bucket{code=\"200\",handler=\"v1/data\",method=\"post\",le=\"+Inf\"} 4
http_request_duration_seconds_sum{code=\"200\",handler=\"v1/data\",method=\"post\"} 2.5
http_request_duration_seconds_count{code=\"200\",handler=\"v1/data\",method=\"post\"} 4
# TYPE process_cpu_seconds counter
# HELP process_cpu_seconds Total user and system CPU time spent in seconds.
process_cpu_seconds_total 0.25
# EOF
";
        assert_eq!(openmetrics(&sample_families()), want);
    }

    #[test]
    fn same_named_families_merge_and_metrics_sort() {
        let gauge = |v: &str, x: f64| MetricFamily {
            name: "g".into(),
            help: "h".into(),
            kind: MetricType::Gauge,
            metrics: vec![Metric {
                labels: labels(&[("k", v)]),
                value: MetricValue::Gauge(x),
            }],
        };
        let out = text(&[gauge("b", 2.0), gauge("a", 1.0)]);
        assert_eq!(
            out,
            "# HELP g h\n# TYPE g gauge\ng{k=\"a\"} 1\ng{k=\"b\"} 2\n"
        );
    }

    #[test]
    fn negotiation_follows_accept() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Format::negotiate(Some(prometheus)),
            Format::OpenMetrics { version: "1.0.0" }
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=0.0.1")),
            Format::OpenMetrics { version: "0.0.1" }
        );
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0,text/plain")),
            Format::Text
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }

    #[test]
    fn status_json_is_jsonpb_shaped() {
        let out = status_json(&sample_families());
        assert_eq!(
            out["http_request_duration_seconds"],
            json!({
                "name": "http_request_duration_seconds",
                "help": "A histogram of duration for requests.",
                "type": "HISTOGRAM",
                "metric": [{
                    "label": [
                        {"name": "code", "value": "200"},
                        {"name": "handler", "value": "v1/data"},
                        {"name": "method", "value": "post"},
                    ],
                    "histogram": {
                        "sampleCount": "4",
                        "sampleSum": 2.5,
                        "bucket": [
                            {"cumulativeCount": "0", "upperBound": 1e-06},
                            {"cumulativeCount": "2", "upperBound": 0.001},
                            {"cumulativeCount": "3", "upperBound": 1.0},
                        ],
                    },
                }],
            })
        );
        assert_eq!(
            out["process_cpu_seconds_total"],
            json!({
                "name": "process_cpu_seconds_total",
                "help": "Total user and system CPU time spent in seconds.",
                "type": "COUNTER",
                "metric": [{"counter": {"value": 0.25}}],
            })
        );
        assert_eq!(out["bundle_loaded_counter"]["type"], "COUNTER");
        assert!(out.get("empty").is_none(), "empty families are left out");
        let nan = MetricFamily {
            name: "n".into(),
            help: String::new(),
            kind: MetricType::Gauge,
            metrics: vec![Metric {
                labels: vec![],
                value: MetricValue::Gauge(f64::NAN),
            }],
        };
        assert_eq!(family_json(&nan)["metric"][0]["gauge"]["value"], "NaN");
    }
}
