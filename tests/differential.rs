//! Differential test of the decision fast path: every policy of the suite is decided through
//! `eval_path` (the per-snapshot plans: RVM program, direct rule evaluation) and through
//! `interpret_path` (the interpreter with a query, the reference), for every path and input,
//! and the two must agree exactly: same value, or same error. Each case also states which tier
//! a path must take, so the test cannot pass by quietly sending everything to the interpreter.
//!
//! The policies: the benchmark cases (bench/cases/, and ../shared/bench when present; each also
//! checked against OPA's answers in its `case.json`), the examples, and hand-written tricky policies.

use std::path::{Path, PathBuf};

use regent::engine::compiled::Tier;
use regent::engine::eval::{eval_path, interpret_path, path_ref};
use regent::engine::{Draft, Policy, Snapshot};
use regorus::Value;
use serde_json::{json, Value as Json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn input(json: &str) -> Option<Value> {
    Some(Value::from_json_str(json).expect("test input is JSON"))
}

/// Builds a snapshot from `(file name, source)` modules and a data document.
fn snapshot(modules: &[(&str, &str)], data: Json) -> Snapshot {
    snapshot_with(modules, data, true)
}

fn snapshot_with(modules: &[(&str, &str)], data: Json, rego_v1: bool) -> Snapshot {
    let mut draft = Draft {
        data,
        ..Draft::default()
    };
    for (id, raw) in modules {
        draft.policies.insert(
            (*id).to_string(),
            Policy {
                raw: (*raw).to_string(),
                rego_v1,
            },
        );
    }
    Snapshot::build(draft).unwrap_or_else(|e| panic!("policies compile: {e:?}"))
}

/// Decides `path` for `input` both ways and requires the same outcome; returns it.
fn agree(
    case: &str,
    snap: &Snapshot,
    path: &str,
    input: &Option<Value>,
) -> Result<Option<Value>, String> {
    let segs = segments(path);
    let render = |r: Result<Option<Value>, regent::engine::EngineError>| match r {
        Ok(v) => Ok(v),
        Err(e) => Err(format!("{e}: {e:?}")),
    };
    // Twice through the fast path: the second run reuses a pooled machine.
    let fast = render(eval_path(snap, &segs, input.clone()));
    let again = render(eval_path(snap, &segs, input.clone()));
    let slow = render(interpret_path(snap, path_ref(&segs), input.clone()));
    assert_eq!(
        fast, slow,
        "{case}: data/{path} with input {input:?}: fast path != interpreter"
    );
    assert_eq!(
        again, slow,
        "{case}: data/{path} with input {input:?}: pooled rerun differs"
    );
    fast
}

fn tier(snap: &Snapshot, path: &str) -> Tier {
    let segs = segments(path);
    snap.plans()
        .get(&segs, || path_ref(&segs))
        .expect("plan cache has room")
        .tier()
}

/// Runs every path with every input (and with no input) and checks the expected tiers.
fn check(
    case: &str,
    snap: &Snapshot,
    tiers: &[(&str, Tier)],
    extra_paths: &[&str],
    inputs: &[Option<Value>],
) {
    let mut all_inputs = inputs.to_vec();
    all_inputs.push(None);
    for path in tiers
        .iter()
        .map(|(p, _)| *p)
        .chain(extra_paths.iter().copied())
    {
        for input in &all_inputs {
            let _ = agree(case, snap, path, input);
        }
    }
    let wrong: Vec<String> = tiers
        .iter()
        .filter(|(path, want)| tier(snap, path) != *want)
        .map(|(path, want)| format!("data/{path}: {:?}, expected {want:?}", tier(snap, path)))
        .collect();
    assert!(wrong.is_empty(), "{case}: tiers: {wrong:#?}");
}

fn to_json(v: &Option<Value>) -> Json {
    match v {
        Some(v) => serde_json::from_str(&v.to_json_str().expect("serialises")).expect("json"),
        None => Json::Null,
    }
}

#[test]
fn bench_cases_agree_and_match_opa() {
    let cases = crate::common::bench_cases();
    assert!(
        cases.len() >= 4,
        "the project's own cases are in bench/cases"
    );
    for dir in cases {
        let case = dir.display().to_string();
        let case = case.as_str();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("case file");
        let policy = read("policy.rego");
        let data = if dir.join("data.json").exists() {
            serde_json::from_str(&read("data.json")).expect("data.json")
        } else {
            json!({})
        };
        let spec: Json = serde_json::from_str(&read("case.json")).expect("case.json");
        let inputs: Vec<Json> = serde_json::from_str(&read("inputs.json")).expect("inputs.json");
        let path = spec["path"].as_str().expect("path");
        let snap = snapshot(&[("policy.rego", &policy)], data);
        // The tier each case's decision takes today; a change shows up here, not as a slowdown.
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let want = match name {
            "admission" | "gateway" => Tier::Rule,
            _ => Tier::Rvm,
        };
        assert_eq!(tier(&snap, path), want, "{case}: the decision path's tier");
        for (input, expected) in inputs
            .iter()
            .zip(spec["expected"].as_array().expect("expected"))
        {
            let input = Some(serde_json::from_value::<Value>(input.clone()).expect("input"));
            let got = agree(case, &snap, path, &input).expect("decides");
            assert_eq!(
                &to_json(&got),
                expected,
                "{case}: OPA's answer for {input:?}"
            );
        }
        // The rest of the package too: helpers, the package document, no input.
        let package = path.rsplit_once('/').map_or("", |(p, _)| p);
        for extra in [package, ""] {
            for input in inputs.iter().take(2) {
                let input = Some(serde_json::from_value::<Value>(input.clone()).expect("input"));
                let _ = agree(case, &snap, extra, &input);
            }
        }
        let _ = agree(case, &snap, path, &None);
    }
}

#[test]
fn examples_agree() {
    let dir = root().join("examples/rbac");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("example file");
    let policy = read("policy.rego");
    let health = read("health.rego");
    let data = serde_json::from_str(&read("data.json")).expect("data.json");
    let snap = snapshot(&[("policy.rego", &policy), ("health.rego", &health)], data);
    check(
        "examples/rbac",
        &snap,
        &[
            ("rbac/allow", Tier::Rvm),
            ("rbac/user_grants", Tier::Rvm),
            ("system/health/live", Tier::Rvm),
            ("system/health/ready", Tier::Rvm),
            // A package whose document also holds base data.
            ("rbac", Tier::Interpreter),
            ("rbac/user_roles/bob", Tier::Interpreter),
        ],
        &[
            "rbac/user_roles/bob/0",
            "system/health",
            "system",
            "nothing/here",
            "",
        ],
        &[
            input(r#"{"user": "alice", "action": "delete", "object": "x"}"#),
            input(r#"{"user": "bob", "action": "update", "object": "dog"}"#),
            input(r#"{"user": "eve", "action": "update", "object": "dog"}"#),
            input(r#"{"plugins_ready": true}"#),
            input(r#"[1, 2]"#),
        ],
    );
}

const SETS: &str = r#"package t.sets

s contains x if some x in input.xs

u := s | {"z"}

i := s & {"a", "b"}

d := s - {"a"}

empty contains x if {
	some x in []
}

n := count(s)

has_a if "a" in s

nested contains {"v": x, "tags": {x, "t"}} if some x in input.xs
"#;

const OBJECTS: &str = r#"package t.objects

obj := {"a": 1, "b": [1, 2], "c": {"d": input.v}}

p[k] := v if some k, v in input.m

nested[k] := {"x": v} if some k, v in input.m

merged := object.union(obj, {"e": 5})

keys := {k | some k, _ in input.m}

nonstring_keys := {1: "one", [2]: "two", true: "three"}

got := object.get(input.m, "k1", "none")
"#;

const COMPREHENSIONS: &str = r#"package t.comp

arr := [y | some x in input.nums; y := x * 2]

st := {x | some x in input.nums; x > 1}

ob := {sprintf("k%d", [x]): x | some x in input.nums}

nested := [[y | some y in input.nums; y < x] | some x in input.nums]

total := sum([x | some x in input.nums])

pairs := [[i, x] | some i, x in input.nums]
"#;

const EVERY: &str = r#"package t.every

all_pos if every x in input.nums { x > 0 }

all_keys if every k, v in input.m {
	startswith(k, "k")
	v != null
}

vacuous if every x in [] { x > 0 }

not_all if not all_pos
"#;

const WITH: &str = r#"package t.with

q if input.u == 1

p if q with input as {"u": 1}

m := x if x := input.u with input.u as 7

base := 3

over := v if v := base + 1

mocked := x if x := over with data.t.with.base as 10

"#;

const DEFAULTS: &str = r#"package t.defaults

default allow := false

allow if input.ok == true

default level := "low"

level := "high" if input.n > 10

default obj := {}

obj := {"n": input.n} if input.n

default f(_) := "dflt"

f(x) := "big" if x > 100

fs := [f(1), f(1000)]
"#;

const FUNCTIONS: &str = r#"package t.fns

double(x) := x * 2

f(x) := "neg" if x < 0

f(x) := "pos" if x > 0

g(x, y) := z if {
	z := x + y
}

out := [double(n) | some n in input.nums]

signs := [f(n) | some n in input.nums]

sum := g(input.a, input.b)

fact(n) := 1 if n <= 1

strs := [concat("-", ["a", "b"]), sprintf("%v|%d|%s", [[1, "x"], 3, "s"]), lower("ABC"), json.marshal({"k": [1, 2]})]

nums := [0.1 + 0.2, 7 / 2, 12345678901234567890 * 10, -3 % 2, round(2.5), 1e3]

matches := regex.match(`^a+b$`, input.s)
"#;

const UNDEFINED: &str = r#"package t.undef

x := input.missing.deep

y if input.nope

zero := input.a / 0

bad_number := to_number("abc")

arr := [input.missing]

not_undef if not input.missing

half if {
	input.a > 1
	input.missing
}
"#;

const CONFLICTS: &str = r#"package t.conflict

v := 1 if input.a

v := 2 if input.b

o[k] := 1 if some k in input.ks

o[k] := 2 if some k in input.ks2

fn(_) := 1

fn(_) := 2

callfn := fn(1)

ok := 1
"#;

const ELSE_AND_REFS: &str = r#"package t.more

grade := "a" if input.s > 90
else := "b" if input.s > 80
else := "c"

a.b.c := 1

a.b.d := input.s

p.q[input.k] := true if input.k

deep := data.t.more.a.b
"#;

fn tricky_inputs() -> Vec<Option<Value>> {
    vec![
        input(
            r#"{"xs": ["a", "c"], "v": 3, "m": {"k1": 1, "k2": null}, "nums": [1, 2, 3], "u": 1, "ok": true, "n": 20, "a": 2, "b": 5, "s": 95, "k": "kk", "ks": ["x"], "ks2": ["y"]}"#,
        ),
        input(
            r#"{"xs": [], "m": {}, "nums": [-1, 0], "u": 2, "ok": false, "n": 1, "a": 1, "s": 85, "ks": ["x"], "ks2": ["x"]}"#,
        ),
        input(r#"{"xs": ["b", "a", "b"], "nums": [], "a": 3, "b": 1, "s": "aab"}"#),
        input(r#""a string input""#),
        input(r#"{}"#),
    ]
}

/// A policy, the tier each listed path must take, and more paths to compare.
type TrickyCase<'a> = (&'a str, &'a str, &'a [(&'a str, Tier)], &'a [&'a str]);

#[test]
fn tricky_policies_agree() {
    use Tier::*;
    let cases: &[TrickyCase] = &[
        (
            "sets",
            SETS,
            &[
                ("t/sets/s", Rvm),
                ("t/sets/u", Rvm),
                ("t/sets/i", Rvm),
                ("t/sets/d", Rvm),
                ("t/sets/empty", Rvm),
                ("t/sets/n", Rvm),
                ("t/sets/has_a", Rvm),
                ("t/sets/nested", Rvm),
                ("t/sets", Interpreter),
            ],
            &["t/sets/s/a", "t"],
        ),
        (
            "objects",
            OBJECTS,
            &[
                ("t/objects/obj", Rvm),
                ("t/objects/merged", Rvm),
                ("t/objects/keys", Rvm),
                ("t/objects/nonstring_keys", Rvm),
                ("t/objects/got", Rvm),
                ("t/objects/obj/c", Interpreter),
            ],
            &[
                "t/objects/p",
                "t/objects/nested",
                "t/objects/p/k1",
                "t/objects",
            ],
        ),
        (
            "comprehensions",
            COMPREHENSIONS,
            &[
                ("t/comp/arr", Rvm),
                ("t/comp/st", Rvm),
                ("t/comp/ob", Rvm),
                ("t/comp/nested", Rvm),
                ("t/comp/total", Rvm),
                ("t/comp/pairs", Rvm),
            ],
            &["t/comp"],
        ),
        (
            "every",
            EVERY,
            &[
                ("t/every/all_pos", Rvm),
                ("t/every/all_keys", Rvm),
                ("t/every/vacuous", Rvm),
                ("t/every/not_all", Rvm),
            ],
            &["t/every"],
        ),
        (
            "with",
            WITH,
            &[
                ("t/with/q", Rvm),
                ("t/with/p", Rule),
                ("t/with/m", Rule),
                ("t/with/mocked", Rule),
                ("t/with/over", Rule),
            ],
            &["t/with"],
        ),
        (
            "defaults",
            DEFAULTS,
            &[
                ("t/defaults/allow", Rvm),
                ("t/defaults/level", Rvm),
                ("t/defaults/obj", Rule),
                ("t/defaults/fs", Rule),
            ],
            &["t/defaults", "t/defaults/f"],
        ),
        (
            "functions",
            FUNCTIONS,
            &[
                ("t/fns/out", Rvm),
                ("t/fns/signs", Rule),
                ("t/fns/sum", Rule),
                ("t/fns/strs", Rvm),
                ("t/fns/nums", Rvm),
                ("t/fns/matches", Rvm),
            ],
            &["t/fns/double", "t/fns/fact", "t/fns"],
        ),
        (
            "undefined",
            UNDEFINED,
            &[
                ("t/undef/x", Rvm),
                ("t/undef/y", Rvm),
                ("t/undef/zero", Rvm),
                ("t/undef/bad_number", Rvm),
                ("t/undef/arr", Rvm),
                ("t/undef/not_undef", Rvm),
                ("t/undef/half", Rvm),
                ("t/undef/nope", Interpreter),
            ],
            &["t/undef", "t/undef/x/y"],
        ),
        (
            "conflicts",
            CONFLICTS,
            &[("t/conflict/v", Rule), ("t/conflict/ok", Rvm)],
            &[
                "t/conflict/o",
                "t/conflict/callfn",
                "t/conflict/fn",
                "t/conflict",
            ],
        ),
        (
            "else and ref heads",
            ELSE_AND_REFS,
            &[("t/more/grade", Rvm), ("t/more/deep", Rule)],
            &[
                "t/more/a",
                "t/more/a/b",
                "t/more/a/b/c",
                "t/more/p/q",
                "t/more/p",
                "t/more",
            ],
        ),
    ];
    let inputs = tricky_inputs();
    for (name, rego, tiers, extra) in cases {
        let snap = snapshot(&[("t.rego", rego)], json!({"base": {"k": 1}}));
        check(name, &snap, tiers, extra, &inputs);
    }
    // All of them in one snapshot, with base data beside the rules.
    let all: Vec<(String, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, rego, _, _))| (format!("t{i}.rego"), *rego))
        .collect();
    let modules: Vec<(&str, &str)> = all.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    let snap = snapshot(&modules, json!({"t": {"data_only": [1, {"x": 2}]}}));
    let paths = [
        "t",
        "t/data_only",
        "t/data_only/1/x",
        "t/sets/s",
        "t/every/all_pos",
        "t/more/grade",
    ];
    check("all in one", &snap, &[], &paths, &inputs);
}

#[test]
fn known_answers() {
    // Spot checks that the agreed answers are OPA's, not merely equal.
    let snap = snapshot(
        &[
            ("t.rego", SETS),
            ("u.rego", UNDEFINED),
            ("c.rego", CONFLICTS),
        ],
        json!({}),
    );
    let i = input(r#"{"xs": ["b", "a", "b"], "a": 2, "b": 1}"#);
    let get = |p: &str| agree("known", &snap, p, &i);
    assert_eq!(to_json(&get("t/sets/s").unwrap()), json!(["a", "b"]));
    assert_eq!(to_json(&get("t/sets/d").unwrap()), json!(["b"]));
    assert_eq!(to_json(&get("t/sets/empty").unwrap()), json!([]));
    assert_eq!(get("t/undef/x").unwrap(), None);
    assert_eq!(
        get("t/undef/bad_number").unwrap(),
        None,
        "builtin errors are undefined"
    );
    assert_eq!(get("t/undef/not_undef").unwrap(), Some(Value::from(true)));
    let err = get("t/conflict/v").unwrap_err();
    assert!(
        err.contains("eval_conflict_error") || err.contains("conflict"),
        "{err}"
    );
    assert_eq!(get("t/conflict/ok").unwrap(), Some(Value::from(1u64)));
}

#[test]
fn rego_v0_modules_agree() {
    let v0 = "package v0\n\nallow { input.x == 1 }\n\ndeny[msg] { input.x > 1; msg := \"big\" }\n";
    let snap = snapshot_with(&[("v0.rego", v0)], json!({}), false);
    check(
        "v0",
        &snap,
        &[("v0/allow", Tier::Rvm), ("v0/deny", Tier::Rvm)],
        &["v0"],
        &[input(r#"{"x": 1}"#), input(r#"{"x": 2}"#)],
    );
}
