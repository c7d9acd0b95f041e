#!/usr/bin/env bash
# Runs the whole suite on Deno and on Bun and prints one summary line per runtime and a total
# `N passed, N failed` line (neither runner prints that form). Also writes the total to
# .tmp/test-summary for .ci/run. Each runner is bounded (30 min) so a hang fails instead of
# stalling CI. Exit status: non-zero if any test failed on either runtime.
set -u
cd "$(dirname "$0")/.."
mkdir -p .tmp
export NO_COLOR=1
DENO=node_modules/deno/deno
BUN=node_modules/bun/bin/bun.exe
strip() { sed 's/\x1b\[[0-9;]*m//g'; }

echo "== deno test =="
timeout --kill-after=30 1800 $DENO test --allow-all --quiet --doc mod.ts src/ tests/ 2>&1 | tee .tmp/deno.out
deno_rc=${PIPESTATUS[0]}
echo "== bun test =="
timeout --kill-after=30 1800 $BUN test 2>&1 | tee .tmp/bun.out
bun_rc=${PIPESTATUS[0]}

dl=$(strip < .tmp/deno.out | grep -aE '^(ok|FAILED) \|' | tail -n1)
dp=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) passed.*/\1/p'); dp=${dp:-0}
df=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) failed.*/\1/p'); df=${df:-0}
ds=$(echo "$dl" | sed -nE 's/.*\| ([0-9]+) ignored.*/\1/p'); ds=${ds:-0}
bp=$(strip < .tmp/bun.out | grep -aE '^ *[0-9]+ pass$' | tail -n1 | awk '{print $1}'); bp=${bp:-0}
bf=$(strip < .tmp/bun.out | grep -aE '^ *[0-9]+ fail$' | tail -n1 | awk '{print $1}'); bf=${bf:-0}
bs=$(strip < .tmp/bun.out | grep -aE '^ *[0-9]+ skip$' | tail -n1 | awk '{print $1}'); bs=${bs:-0}
# A runner that crashed or found nothing counts as a failure, never as a silent pass.
if [ "$deno_rc" -ne 0 ] && [ "$df" -eq 0 ]; then df=1; fi
if [ "$bun_rc" -ne 0 ] && [ "$bf" -eq 0 ]; then bf=1; fi
if [ "$dp" -eq 0 ]; then df=$((df + 1)); fi
if [ "$bp" -eq 0 ]; then bf=$((bf + 1)); fi

echo
echo "deno: $dp passed, $df failed, $ds skipped"
echo "bun: $bp passed, $bf failed, $bs skipped"
total="$((dp + bp)) passed, $((df + bf)) failed, $((ds + bs)) skipped"
echo "$total" > .tmp/test-summary
echo "$total"
[ $((df + bf)) -eq 0 ]
