#!/usr/bin/env bash
# Writes each case's case.json "expected" from OPA's own engine (../shared/tools/opa-eval),
# one input at a time. Run after editing a case; the tests then hold regent to OPA's answers.
set -euo pipefail
cd "$(dirname "$0")"
OPA_EVAL=${OPA_EVAL:-../../../shared/tools/opa-eval}
declare -A PATHS=([teams]=teams/authz/allow [gateway]=gateway/allow [admission]=admission/violations [catalog]=catalog/allow)
for case in "${!PATHS[@]}"; do
  path=${PATHS[$case]}
  args=(-p "$case/policy.rego")
  [ -f "$case/data.json" ] && args+=(-d "$case/data.json")
  python3 - "$case" "$path" "$OPA_EVAL" "${args[@]}" <<'PY'
import json, subprocess, sys
case, path, opa_eval, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
expected = []
for inp in json.load(open(f"{case}/inputs.json")):
    out = subprocess.run([opa_eval, *args, "--input-json", json.dumps(inp), "data." + path.replace("/", ".")],
                         check=True, capture_output=True, text=True).stdout
    rs = json.loads(out)
    expected.append(rs[0]["expressions"][0]["value"] if rs else None)
json.dump({"path": path, "expected": expected}, open(f"{case}/case.json", "w"), indent=1)
open(f"{case}/case.json", "a").write("\n")
print(case, json.dumps(expected)[:300])
PY
done
