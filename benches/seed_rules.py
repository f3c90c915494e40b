#!/usr/bin/env python3
"""The seed's approach on the engine benchmark's bodies, for comparison with `cargo bench --bench engine`.

The legacy monitor parses each response with json.loads, applies its four rules (status/stage
sync, progress on completion) to the dict, and serialises it again with json.dumps. This runs the
same three bodies as benches/engine.rs through that and reports the median time per operation.
If criterion results exist (target/criterion), it prints the Rust/Python ratio as well.

Usage: python3 benches/seed_rules.py   (from the repository root)
"""

import json
import pathlib
import statistics
import timeit

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def check(record, auto_fix=True):
    """The seed's four rules (see the seed document), fixing as the sidecar's defaults do."""
    issues = []
    status = record.get("status")
    stage = record.get("stage")
    if status == "completed" and stage != "completed":
        issues.append(("minor_issue", f"status=completed but stage={stage}"))
        if auto_fix:
            record["stage"] = "completed"
    if status == "failed" and stage != "failed":
        issues.append(("minor_issue", f"status=failed but stage={stage}"))
        if auto_fix:
            record["stage"] = "failed"
    if record.get("is_completed") and status == "completed" and record.get("progress") != 100:
        issues.append(("minor_issue", f"is_completed=true, status=completed but progress={record.get('progress')}"))
        if auto_fix:
            record["progress"] = 100
    if record.get("is_completed") and status == "failed" and record.get("progress") != 0:
        issues.append(("minor_issue", f"is_completed=true, status=failed but progress={record.get('progress')}"))
        if auto_fix:
            record["progress"] = 0
    return issues


def whole(body):
    doc = json.loads(body)
    issues = check(doc)
    return json.dumps(doc, ensure_ascii=False).encode(), issues


def history(body):
    doc = json.loads(body)
    issues = [i for r in doc["history"] for i in check(r)]
    return json.dumps(doc, ensure_ascii=False).encode(), issues


CASES = [
    ("status_consistent", "status.json", whole, 0),
    ("status_one_fix", "status_fix.json", whole, 1),
    ("history_100", "history.json", history, 0),
]


def criterion_median_ns(name):
    path = ROOT / "target" / "criterion" / "inspect" / name / "new" / "estimates.json"
    try:
        return json.loads(path.read_text())["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def main():
    print(f"{'body':<20}{'bytes':>8}{'python µs/op':>15}{'MB/s':>9}{'rust µs/op':>13}{'python/rust':>13}")
    for name, file, fn, expected_issues in CASES:
        body = (HERE / "bodies" / file).read_bytes()
        _, issues = fn(body)
        assert len(issues) == expected_issues, (name, issues)
        timer = timeit.Timer(lambda: fn(body))
        number, _ = timer.autorange()
        runs = timer.repeat(repeat=7, number=number)
        per_op = statistics.median(runs) / number
        rust = criterion_median_ns(name)
        rust_col = f"{rust / 1000:>13.3f}" if rust else f"{'-':>13}"
        ratio = f"{per_op * 1e9 / rust:>12.0f}x" if rust else f"{'-':>13}"
        print(f"{name:<20}{len(body):>8}{per_op * 1e6:>15.2f}{len(body) / per_op / 1e6:>9.1f}{rust_col}{ratio}")


if __name__ == "__main__":
    main()
