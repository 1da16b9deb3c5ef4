# The check helper the end-to-end scripts share. Source it with the label their lines start with:
#   source scripts/checks.sh e2e
# then `check NAME EXPECTED ACTUAL` counts a pass or prints "LABEL: FAIL NAME: expected ..., got ...", and
# `checks_summary` prints "LABEL: N passed, M failed" and returns non-zero after any failure.
checks_label=$1
passed=0 failed=0
check() {  # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "$checks_label: FAIL $1: expected $2, got $3"; fi
}
checks_summary() {
  echo "$checks_label: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
