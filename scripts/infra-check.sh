#!/usr/bin/env bash
# Offline checks of the CloudFormation/SAM templates in infra/, with no AWS account:
#   1. cfn-lint (errors, warnings and informational findings; template.yaml in several
#      regions, edge.yaml in us-east-1, where it must be deployed);
#   2. checkov (CloudFormation policies) on every template;
#   3. a skip audit: every `Metadata: checkov: skip:` entry names one check and gives a
#      one-line reason, and still suppresses a real failure (a skip whose check would
#      pass without it is stale and must go).
# Exits non-zero on any finding and ends with a one-line summary.
#
# Tools are pinned and installed only when missing. checkov goes into its own virtual
# environment under ~/.cache/deploysphere/tools: its dependency pins (boto3 1.35,
# networkx 2.x, ...) would otherwise downgrade the boto3/botocore that awscli and
# moto use on this machine, so a `pip install --no-deps` of it into the system
# Python is not an option. cfn-lint is used from PATH when it is the pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.51.0
CHECKOV_VERSION=3.3.30
TOOLS=${DEPLOYSPHERE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/deploysphere/tools}
# Regions template.yaml is linted for (resource and property availability differ).
MAIN_REGIONS=(us-east-1 us-west-2 eu-west-1 eu-central-1 ap-southeast-2)

log() { echo "infra-check: $*" >&2; }

# tool_env NAME VERSION MODULE: prints the python of an environment that has
# NAME==VERSION, creating $TOOLS/NAME-VERSION when it is missing. Falls back to
# `pip install --target` (run with PYTHONPATH) where the venv module is missing.
tool_env() {
  local name=$1 version=$2 module=$3 dir="$TOOLS/$1-$2"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import $module" 2>/dev/null; then
    echo "$dir/bin/python"; return
  fi
  if [ -d "$dir/site" ] && PYTHONPATH="$dir/site" python3 -c "import $module" 2>/dev/null; then
    echo "site:$dir/site"; return
  fi
  log "installing $name $version (pip, into $dir)"
  rm -rf "$dir"
  mkdir -p "$TOOLS"
  if python3 -m venv "$dir" >/dev/null 2>&1 && [ -x "$dir/bin/python" ]; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$name==$version" >&2
    echo "$dir/bin/python"
  else
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir/site" "$name==$version" >&2 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages --target "$dir/site" "$name==$version" >&2
    echo "site:$dir/site"
  fi
}

# run_py ENV ARGS...: runs python from a tool_env answer.
run_py() {
  local env=$1; shift
  case $env in
    site:*) PYTHONPATH="${env#site:}" python3 "$@" ;;
    *) "$env" "$@" ;;
  esac
}

# cfn-lint: the one on PATH if it is the pinned version, else a private environment.
if python3 -c "import sys; from cfnlint.version import __version__ as v; sys.exit(v != '$CFN_LINT_VERSION')" 2>/dev/null; then
  CFN_ENV=$(command -v python3)
else
  CFN_ENV=$(tool_env cfn-lint "$CFN_LINT_VERSION" cfnlint)
fi
CHECKOV_ENV=$(tool_env checkov "$CHECKOV_VERSION" checkov.main)

shopt -s nullglob
templates=(infra/*.yaml)
if [ ${#templates[@]} -eq 0 ]; then
  log "no templates in infra/"; exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. cfn-lint -----------------------------------------------------------------------
lint_findings=0
for template in "${templates[@]}"; do
  case $template in
    infra/edge.yaml) regions=(us-east-1) ;;
    *) regions=("${MAIN_REGIONS[@]}") ;;
  esac
  out="$work/lint-$(basename "$template").txt"
  run_py "$CFN_ENV" -c 'import sys; from cfnlint.runner import main; sys.exit(main())' \
    --include-checks I --format parseable \
    --regions "${regions[@]}" -- "$template" >"$out" 2>&1 || true
  n=$(grep -c . "$out" || true)
  if [ "$n" -gt 0 ]; then
    sed 's/^/  cfn-lint: /' "$out"
  fi
  lint_findings=$((lint_findings + n))
done

# 2. checkov ------------------------------------------------------------------------
checkov() {
  run_py "$CHECKOV_ENV" -m checkov.main --framework cloudformation --skip-download \
    -o json -d "$1" 2>"$work/checkov-stderr.txt"
}
checkov infra >"$work/checkov.json" || true

# 3. skip audit: the templates without their checkov skips, as JSON, scanned again.
mkdir -p "$work/unskipped"
run_py "$CFN_ENV" - "$work/unskipped" "${templates[@]}" >"$work/audit-static.txt" <<'PY'
import json, re, sys
from cfnlint.decode import decode

out_dir, templates = sys.argv[1], sys.argv[2:]
for path in templates:
    template, matches = decode(path)
    if matches or template is None:
        print(f"{path}: does not parse: {matches}")
        continue
    for name, resource in (template.get("Resources") or {}).items():
        skips = ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip")
        if skips is None:
            continue
        for skip in skips:
            check = str(skip.get("id", ""))
            comment = str(skip.get("comment", "")).strip()
            if not re.fullmatch(r"CKV2?_AWS_[0-9]+", check):
                print(f"{path}: {name}: skip of {check!r}: one AWS check id per skip, no blanket skips")
            if len(comment) < 20 or "\n" in comment:
                print(f"{path}: {name}: skip of {check}: needs a one-line reason")
        del resource["Metadata"]["checkov"]
    with open(f"{out_dir}/{path.rsplit('/', 1)[-1]}.json", "w") as f:
        json.dump(template, f)
PY
checkov "$work/unskipped" >"$work/checkov-unskipped.json" || true

# Report -----------------------------------------------------------------------------
python3 - "$work" "${#templates[@]}" "$lint_findings" <<'PY'
import json, sys

work, n_templates, lint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def load(name):
    try:
        with open(f"{work}/{name}") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(data, list):  # one report per framework
        data = next((d for d in data if d.get("check_type") == "cloudformation"), None)
    return data if isinstance(data, dict) and "results" in data else None

problems = []
report = load("checkov.json")
if report is None:
    problems.append("checkov produced no CloudFormation report (see its stderr below)")
    try:
        problems.append(open(f"{work}/checkov-stderr.txt").read()[-2000:])
    except OSError:
        pass
    summary = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0}
else:
    summary = report["summary"]
    for c in report["results"].get("failed_checks", []):
        lines = c.get("file_line_range") or ["?", "?"]
        print(f"  checkov: FAILED {c['check_id']} {c['resource']} "
              f"infra/{c['file_path'].lstrip('/')}:{lines[0]}-{lines[1]} {c['check_name']}")
    if summary.get("parsing_errors"):
        problems.append(f"checkov could not parse {summary['parsing_errors']} file(s)")

audit = [line for line in open(f"{work}/audit-static.txt").read().splitlines() if line]
unskipped = load("checkov-unskipped.json")
if report is not None:
    if unskipped is None:
        audit.append("the skip audit's checkov run produced no report")
    else:
        failing = {(c["check_id"], c["resource"]) for c in unskipped["results"].get("failed_checks", [])}
        for c in report["results"].get("skipped_checks", []):
            if (c["check_id"], c["resource"]) not in failing:
                audit.append(f"{c['resource']}: stale skip of {c['check_id']} (it passes without the skip)")
for line in audit:
    print(f"  skip audit: {line}")
for line in problems:
    print(f"  {line}")

failed = lint + summary["failed"] + len(audit) + len(problems)
print(f"infra-check: {n_templates} templates; cfn-lint: {lint} findings; checkov: "
      f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped; "
      f"skip audit: {len(audit)} findings; {'OK' if failed == 0 else 'FAILED'}")
sys.exit(1 if failed else 0)
PY
