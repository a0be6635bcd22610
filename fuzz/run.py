"""Run every fuzz target (fuzz/fuzz_*.py) for a bounded time; exit 1 if any finds a crash.

    python fuzz/run.py                     # each target for 20 s, two at a time
    python fuzz/run.py --seconds 300 fuzz_coap

With atheris (CPython 3.11-3.13 on Linux x86_64 have wheels) each target runs under
libFuzzer, coverage-guided, with `-max_total_time`; a crash leaves its input in the
artifact folder printed, and `python fuzz/fuzz_X.py CRASH_FILE` replays it. Without
atheris the same `check` functions run under hypothesis for the same time: random and
shrunk inputs, not coverage-guided, and said so in the output.
`./run.sh test` runs this after the test suite (HEADRACE_FUZZ_SECONDS, 0 to skip).
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets(names: list[str]) -> list[Path]:
    every = sorted(HERE.glob("fuzz_*.py"))
    if not names:
        return every
    chosen = [p for p in every if p.stem in names or p.name in names]
    if len(chosen) != len(names):
        raise SystemExit(f"unknown target in {names}; there are {[p.stem for p in every]}")
    return chosen


def run_atheris(paths: list[Path], seconds: int, parallel: int) -> list[str]:
    """libFuzzer runs, `parallel` at a time; the names of those that failed."""
    failed = []
    artifacts = Path(tempfile.mkdtemp(prefix="headrace-fuzz-"))
    pending = list(paths)
    running: list[tuple[Path, subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < parallel:
            path = pending.pop(0)
            log = artifacts / f"{path.stem}.log"
            cmd = [sys.executable, str(path), f"-max_total_time={seconds}", "-rss_limit_mb=2048",
                   "-timeout=20", f"-artifact_prefix={artifacts}/{path.stem}-", "-print_final_stats=1"]
            running.append((path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb")), log))
        time.sleep(0.2)
        for item in list(running):
            path, proc, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            text = log.read_text(errors="replace")
            runs = next((ln.rsplit(":", 1)[1].strip() for ln in text.splitlines()
                         if ln.startswith("stat::number_of_executed_units")), "?")
            if proc.returncode == 0:
                print(f"fuzz {path.stem}: {runs} inputs in {seconds} s, no crash", flush=True)
            else:
                failed.append(path.stem)
                print(f"fuzz {path.stem}: FAILED (exit {proc.returncode}) after {runs} inputs; log {log}\n"
                      + "\n".join(text.splitlines()[-40:]), flush=True)
    return failed


def run_hypothesis(paths: list[Path], seconds: int, why: str) -> list[str]:
    """The same check functions under hypothesis, each for `seconds`; the names of those that failed."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    print(f"fuzz: {why}: running each target's check() under hypothesis for the same time "
          "(random inputs, not coverage-guided)", flush=True)
    failed = []
    for path in paths:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        @settings(max_examples=500, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.binary(max_size=2048))
        def property_(data):
            module.check(data)

        deadline, rounds = time.monotonic() + seconds, 0
        try:
            while time.monotonic() < deadline:
                property_()
                rounds += 1
        except Exception as exc:  # the shrunk failing input is in the message hypothesis adds
            failed.append(path.stem)
            notes = "\n".join(getattr(exc, "__notes__", []))  # hypothesis puts the failing input here
            print(f"fuzz {path.stem} (hypothesis): FAILED: {type(exc).__name__}: {exc}\n{notes}", flush=True)
            continue
        print(f"fuzz {path.stem} (hypothesis): {rounds * 500} inputs in {seconds} s, no failure", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("targets", nargs="*", help="fuzz_X names (default: every fuzz/fuzz_*.py)")
    ap.add_argument("--seconds", type=int, default=20, help="time per target (default 20)")
    ap.add_argument("--parallel", type=int, default=2, help="targets run at once under atheris (default 2)")
    ap.add_argument("--hypothesis", action="store_true", help="use the hypothesis runner even if atheris is here")
    args = ap.parse_args(argv)
    paths = targets(args.targets)
    if args.hypothesis:
        failed = run_hypothesis(paths, args.seconds, "--hypothesis")
    elif importlib.util.find_spec("atheris") is None:
        failed = run_hypothesis(paths, args.seconds, "atheris is not installed for this Python "
                                "(wheels: CPython 3.11-3.13 on Linux x86_64)")
    else:
        failed = run_atheris(paths, args.seconds, args.parallel)
    if failed:
        print(f"fuzz: {len(failed)} of {len(paths)} targets failed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
