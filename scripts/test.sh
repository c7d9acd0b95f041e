#!/usr/bin/env bash
# Runs the whole suite on Deno and on Bun and prints one summary line per runtime and a total
# `N passed, N failed` line (neither runner prints that form). Also writes the total to
# .tmp/test-summary for .ci/run. Each runner is bounded (30 min) so a hang fails instead of
# stalling CI; Bun's own 5 s limit per test is raised (a test that runs a child process can need
# more on a busy machine). Exit status: non-zero if any test failed on either runtime.
#
# Usage: scripts/test.sh [tests/x.test.ts ...] runs those files only (default: the whole suite,
# with Deno's doc tests). BLKIO_TEST_OUT (default .tmp) is where the outputs go, and
# BLKIO_TEST_TIMEOUT (seconds, default 1800) bounds each runner: scripts/kernel_test.sh runs
# this inside an emulated machine, many times slower. BLKIO_TEST_PER_FILE=1 adds a table of
# passed, failed and skipped tests per file and runtime; BLKIO_TEST_NO_CHECK=1 skips Deno's type
# check (emulated, it takes minutes, and the source is the one checked on the host).
#
# A runner can also miss tests without failing: Deno drops the rest of a file whose top-level
# code throws after its first test() and still says ok, and a Deno.exit() from top-level code
# only ends that file. So every test file must have run as many tests on Deno as on Bun (they
# register the same ones), and each missing test counts as a failure. The tests are flat
# top-level test() calls: Deno counts a describe() as one test with steps, Bun each it().
set -u
cd "$(dirname "$0")/.."
OUT=${BLKIO_TEST_OUT:-.tmp}
LIMIT=${BLKIO_TEST_TIMEOUT:-1800}
mkdir -p "$OUT"
export NO_COLOR=1
DENO=node_modules/deno/deno
BUN=node_modules/bun/bin/bun.exe
strip() { sed 's/\x1b\[[0-9;]*m//g'; }

if [ $# -gt 0 ]; then
  deno_args=("$@")
  # Bun takes an argument without a leading ./ or / as a filter on file names, not as a path.
  bun_args=()
  for f in "$@"; do case $f in /* | ./*) bun_args+=("$f") ;; *) bun_args+=("./$f") ;; esac; done
else
  deno_args=(--doc mod.ts src/ tests/)
  bun_args=()
fi

[ "${BLKIO_TEST_NO_CHECK:-}" = 1 ] && deno_args=(--no-check "${deno_args[@]}")

echo "== deno test =="
started=$SECONDS
timeout --kill-after=30 "$LIMIT" $DENO test --allow-all --quiet "${deno_args[@]}" 2>&1 | tee "$OUT/deno.out"
deno_rc=${PIPESTATUS[0]}
echo "(deno ran for $((SECONDS - started)) s)"
echo "== bun test =="
started=$SECONDS
timeout --kill-after=30 "$LIMIT" $BUN test --timeout 120000 "${bun_args[@]}" 2>&1 | tee "$OUT/bun.out"
bun_rc=${PIPESTATUS[0]}
echo "(bun ran for $((SECONDS - started)) s)"

dl=$(strip < "$OUT/deno.out" | grep -aE '^(ok|FAILED) \|' | tail -n1)
dp=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) passed.*/\1/p'); dp=${dp:-0}
df=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) failed.*/\1/p'); df=${df:-0}
ds=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) ignored.*/\1/p'); ds=${ds:-0}
bp=$(strip < "$OUT/bun.out" | grep -aE '^ *[0-9]+ pass$' | tail -n1 | awk '{print $1}'); bp=${bp:-0}
bf=$(strip < "$OUT/bun.out" | grep -aE '^ *[0-9]+ fail$' | tail -n1 | awk '{print $1}'); bf=${bf:-0}
bs=$(strip < "$OUT/bun.out" | grep -aE '^ *[0-9]+ skip$' | tail -n1 | awk '{print $1}'); bs=${bs:-0}
# Tests per file: Deno's "running N tests from ./tests/x.test.ts" against Bun's result lines
# under each "tests/x.test.ts:" header (up to its closing lists of skipped and failed tests).
strip < "$OUT/deno.out" | sed -nE 's|^running ([0-9]+) tests? from \./(tests/.*)$|\2 \1|p' | LC_ALL=C sort > "$OUT/deno.counts"
strip < "$OUT/bun.out" | awk '
  /^[0-9]+ tests? (skipped|failed|todo):$/ { file = "" }
  /^tests\/[^ ]+\.(ts|tsx|mts|js|mjs|cjs|jsx):$/ { file = substr($0, 1, length($0) - 1); n[file] += 0 }
  file != "" && /^\((pass|fail|skip|todo)\) / { n[file]++ }
  END { for (f in n) print f, n[f] }' | LC_ALL=C sort > "$OUT/bun.counts"
counts=$(LC_ALL=C join -a1 -a2 -e 0 -o 0,1.2,2.2 "$OUT/deno.counts" "$OUT/bun.counts")
uneven=$(echo "$counts" | awk '$2 != $3')
if [ -n "$uneven" ]; then
  echo
  echo "Tests that ran on one runtime only (file, deno, bun):"
  echo "$uneven"
  df=$((df + $(echo "$counts" | awk '$3 > $2 {m += $3 - $2} END {print m + 0}')))
  bf=$((bf + $(echo "$counts" | awk '$2 > $3 {m += $2 - $3} END {print m + 0}')))
fi
if [ "${BLKIO_TEST_PER_FILE:-}" = 1 ]; then
  # Deno ends each test's line with "... ok (", "... FAILED (" or "... ignored ("; Bun starts it
  # with (pass), (fail) or (skip) under the file's header. A test that runs over a minute gets
  # Deno's "'name' has been running for over (1m0s)" after its "...", and its result on a line
  # of its own (" ok (2m3s)"): the table missed those (examples on emulated arm64: 65 passed
  # where Deno's own summary said 66).
  deno_tally=$(strip < "$OUT/deno.out" | awk '
    /^running [0-9]+ tests? from \.\/tests\// { file = substr($5, 3) }
    file != "" && /( \.\.\. |^ )ok \(/ { p[file]++ }
    file != "" && /( \.\.\. |^ )FAILED \(/ { f[file]++ }
    file != "" && /( \.\.\. |^ )ignored \(/ { s[file]++ }
    END { for (x in p) seen[x]; for (x in f) seen[x]; for (x in s) seen[x]
          for (x in seen) printf "%s %d/%d/%d\n", x, p[x], f[x], s[x] }' | LC_ALL=C sort)
  bun_tally=$(strip < "$OUT/bun.out" | awk '
    /^[0-9]+ tests? (skipped|failed|todo):$/ { file = "" }
    /^tests\/[^ ]+\.(ts|tsx|mts|js|mjs|cjs|jsx):$/ { file = substr($0, 1, length($0) - 1); seen[file] }
    file != "" && /^\(pass\) / { p[file]++ }
    file != "" && /^\(fail\) / { f[file]++ }
    file != "" && /^\((skip|todo)\) / { s[file]++ }
    END { for (x in seen) printf "%s %d/%d/%d\n", x, p[x], f[x], s[x] }' | LC_ALL=C sort)
  echo
  echo "Per file, passed/failed/skipped:"
  LC_ALL=C join -a1 -a2 -e - -o 0,1.2,2.2 <(echo "$deno_tally") <(echo "$bun_tally") |
    awk 'BEGIN { printf "%-40s %-12s %s\n", "file", "deno", "bun" } NF { printf "%-40s %-12s %s\n", $1, $2, $3 }'
fi
if strip < "$OUT/deno.out" | grep -qE 'called .?Deno\.exit'; then
  echo "A test file called Deno.exit: the tests after that call did not run"
  df=$((df + 1))
fi
# A runner that crashed or found nothing counts as a failure, never as a silent pass.
if [ "$deno_rc" -ne 0 ] && [ "$df" -eq 0 ]; then df=1; fi
if [ "$bun_rc" -ne 0 ] && [ "$bf" -eq 0 ]; then bf=1; fi
if [ "$dp" -eq 0 ]; then df=$((df + 1)); fi
if [ "$bp" -eq 0 ]; then bf=$((bf + 1)); fi

echo
echo "deno: $dp passed, $df failed, $ds skipped"
echo "bun: $bp passed, $bf failed, $bs skipped"
echo "skipped: $((ds + bs)) (reasons in the test names above)"
total="$((dp + bp)) passed, $((df + bf)) failed"
echo "$total" > "$OUT/test-summary"
echo "$total"
[ $((df + bf)) -eq 0 ]
