//! The Prometheus protobuf exposition format: `io.prometheus.client.MetricFamily` messages, each
//! preceded by its length as a varint (`encoding=delimited`).
//!
//! It is the only format that carries native histograms, so it is what Prometheus asks for first
//! when its native-histogram support is on (OPA's client library answers it too). The few
//! message types needed are written by hand rather than generated: field numbers are those of
//! `io/prometheus/client/metrics.proto`. Families are sorted and merged as in the text formats;
//! names are kept as given (counters keep or lack `_total` exactly as in the text format).

use super::encode::{classic, gathered};
use super::family::{Exemplar, MetricFamily, MetricType, MetricValue, NativeBuckets};

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

// `MetricType` enum values.
const COUNTER: u64 = 0;
const GAUGE: u64 = 1;
const HISTOGRAM: u64 = 4;

/// Every family as a length-delimited `MetricFamily`.
pub fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8192);
    for (family, metrics) in gathered(families) {
        let mut msg = Vec::new();
        string(&mut msg, 1, &family.name);
        string(&mut msg, 2, &family.help);
        let kind = match family.kind {
            MetricType::Counter => COUNTER,
            MetricType::Gauge => GAUGE,
            MetricType::Histogram => HISTOGRAM,
        };
        varint_field(&mut msg, 3, kind);
        for metric in metrics {
            let mut m = Vec::new();
            for (name, value) in &metric.labels {
                message(&mut m, 1, &label_pair(name, value));
            }
            match &metric.value {
                MetricValue::Counter(v) => message(&mut m, 3, &double_message(*v)),
                MetricValue::Gauge(v) => message(&mut m, 2, &double_message(*v)),
                value => message(&mut m, 7, &histogram(value)),
            }
            message(&mut msg, 4, &m);
        }
        varint(&mut out, msg.len() as u64);
        out.extend_from_slice(&msg);
    }
    out
}

fn histogram(value: &MetricValue) -> Vec<u8> {
    let (buckets, count, sum) = classic(value).expect("only histograms get here");
    let (exemplars, native) = match value {
        MetricValue::RichHistogram(h) => (h.exemplars.as_slice(), h.native.as_ref()),
        _ => (&[][..], None),
    };
    let mut h = Vec::new();
    varint_field(&mut h, 1, count);
    double(&mut h, 2, sum);
    for (i, (bound, cumulative)) in buckets.iter().enumerate() {
        let mut b = Vec::new();
        varint_field(&mut b, 1, *cumulative);
        double(&mut b, 2, *bound);
        if let Some(Some(exemplar)) = exemplars.get(i) {
            message(&mut b, 3, &exemplar_message(exemplar));
        }
        message(&mut h, 3, &b);
    }
    if let Some(native) = native {
        native_fields(&mut h, native);
        // Native histograms take their exemplars from their own field (with timestamps).
        for exemplar in exemplars.iter().flatten() {
            message(&mut h, 16, &exemplar_message(exemplar));
        }
    }
    h
}

/// schema (5), zero_threshold (6), zero_count (7), positive_span (12), positive_delta (13).
fn native_fields(h: &mut Vec<u8>, native: &NativeBuckets) {
    tag(h, 5, VARINT);
    varint(h, zigzag(i64::from(native.schema)));
    double(h, 6, native.zero_threshold);
    varint_field(h, 7, native.zero_count);
    let mut deltas = Vec::new();
    let mut previous_count = 0i64;
    // (offset from the previous span's end, or the first index; length)
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut next_index: Option<i32> = None;
    for (index, count) in &native.positive {
        match next_index {
            Some(expected) if expected == *index => {
                spans.last_mut().expect("a span is open").1 += 1;
            }
            Some(expected) => spans.push((index - expected, 1)),
            None => spans.push((*index, 1)),
        }
        next_index = Some(index + 1);
        let count = i64::try_from(*count).unwrap_or(i64::MAX);
        varint(&mut deltas, zigzag(count - previous_count));
        previous_count = count;
    }
    for (offset, length) in spans {
        let mut span = Vec::new();
        tag(&mut span, 1, VARINT);
        varint(&mut span, zigzag(i64::from(offset)));
        varint_field(&mut span, 2, u64::from(length));
        message(h, 12, &span);
    }
    if !deltas.is_empty() {
        message(h, 13, &deltas);
    }
}

fn exemplar_message(exemplar: &Exemplar) -> Vec<u8> {
    let mut e = Vec::new();
    for (name, value) in &exemplar.labels {
        message(&mut e, 1, &label_pair(name, value));
    }
    double(&mut e, 2, exemplar.value);
    // google.protobuf.Timestamp {seconds: 1, nanos: 2}
    let mut ts = Vec::new();
    let seconds = exemplar.timestamp.floor();
    varint_field(&mut ts, 1, seconds as u64);
    varint_field(&mut ts, 2, ((exemplar.timestamp - seconds) * 1e9) as u64);
    message(&mut e, 3, &ts);
    e
}

fn label_pair(name: &str, value: &str) -> Vec<u8> {
    let mut pair = Vec::new();
    string(&mut pair, 1, name);
    string(&mut pair, 2, value);
    pair
}

/// `Counter` and `Gauge` both hold one `double value = 1`.
fn double_message(value: f64) -> Vec<u8> {
    let mut m = Vec::new();
    double(&mut m, 1, value);
    m
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

fn double(out: &mut Vec<u8>, field: u32, value: f64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    message(out, field, value.as_bytes());
}

fn message(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::family::{Metric, RichHistogram};

    #[test]
    fn varints_and_zigzag() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(-2), 3);
    }

    #[test]
    fn a_gauge_family_byte_for_byte() {
        let families = [MetricFamily {
            name: "g".into(),
            help: "h".into(),
            kind: MetricType::Gauge,
            metrics: vec![Metric {
                labels: vec![("k".into(), "v".into())],
                value: MetricValue::Gauge(1.0),
            }],
        }];
        let mut want = vec![
            0x0a, 1, b'g', // name
            0x12, 1, b'h', // help
            0x18, 1, // type GAUGE
            0x22, 19, // metric
            0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // label
            0x12, 9, 0x09, // gauge { value }
        ];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        let mut delimited = vec![want.len() as u8];
        delimited.extend(want);
        assert_eq!(encode(&families), delimited);
    }

    #[test]
    fn native_spans_and_deltas() {
        let native = NativeBuckets {
            schema: 3,
            zero_threshold: 0.5,
            zero_count: 1,
            positive: vec![(-2, 3), (-1, 1), (4, 2)],
        };
        let mut h = Vec::new();
        native_fields(&mut h, &native);
        let mut want = vec![0x28, 6, 0x31];
        want.extend_from_slice(&0.5f64.to_le_bytes());
        want.extend([0x38, 1]);
        // spans: {offset -2, length 2}, {offset 4 - 0 = 4, length 1}
        want.extend([0x62, 4, 0x08, 3, 0x10, 2]);
        want.extend([0x62, 4, 0x08, 8, 0x10, 1]);
        // deltas: 3, -2, +1
        want.extend([0x6a, 3, 6, 3, 2]);
        assert_eq!(h, want);
        let value = MetricValue::RichHistogram(Box::new(RichHistogram {
            buckets: vec![(1.0, 6)],
            count: 6,
            sum: 2.0,
            exemplars: vec![],
            native: Some(native),
        }));
        assert!(histogram(&value).ends_with(&want));
    }
}
