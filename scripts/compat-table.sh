#!/usr/bin/env bash
# Copies the compatibility table that the last full e2e run wrote (target/e2e-compat.md) into
# README.md between the compat markers, so the README states what the tests showed.
set -euo pipefail
cd "$(dirname "$0")/.."
table=target/e2e-compat.md
[ -s "$table" ] || { echo "no $table: run scripts/test.sh first" >&2; exit 1; }
python3 - "$table" <<'PY'
import sys
table = open(sys.argv[1]).read().strip()
readme = open("README.md").read()
begin, end = "<!-- compat:begin -->", "<!-- compat:end -->"
head, rest = readme.split(begin, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
PY
echo "README.md compatibility table updated from $table"
