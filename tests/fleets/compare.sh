#!/bin/sh
# Runs the demo once per fleet file here, with the same workload and seed, and prints job
# waits against instance time (docs/usage/choosing-settings.md). Reports go to
# target/compare/seed-<SEED>/<fleet>.json. Usage: [SEED=42] tests/fleets/compare.sh [demo flags...]
# (after cargo build --workspace --bins, with moto on PATH as make demo has it).
set -eu
here=$(dirname "$0")
seed=${SEED:-42}
out=target/compare/seed-$seed
mkdir -p "$out"
for fleet in "$here"/*.toml; do
    name=$(basename "$fleet" .toml)
    echo "==> $name" >&2
    target/debug/warmfleet-testbed demo --config "$fleet" --seed "$seed" --time-scale 20 \
        --report "$out/$name.json" "$@" >"$out/$name.log" 2>&1 || echo "    $name: not clean, see $out/$name.log" >&2
done
python3 - "$out" <<'PY'
import json, pathlib, sys
print("| fleet | jobs ok | wait p50 | wait p95 | in service s | warm s | cold launches | warm resumes |")
print("|---|---|---|---|---|---|---|---|")
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    j, w, i, s = r["jobs"], r["job_wait_seconds"], r["instances"], r["instance_seconds"]
    print(f"| {f.stem} | {j['succeeded']}/{j['total']} | {w['p50']:.0f} | {w['p95']:.0f} "
          f"| {s['in_service']:.0f} | {s['warm']:.0f} | {i['cold_launches']} | {i['warm_resumes']} |")
PY
