"""Run every benchmark under bench/, print their tables, and record them in bench/README.md.

    make bench                                  # = python -m bench.run_all (everything, full size)
    python -m bench.run_all --quick             # small sizes: minutes, for a smoke run
    python -m bench.run_all --only ingest query # a subset (other README sections are kept)
    python -m bench.run_all --list              # the benchmarks and their commands

Each benchmark is its own command (shown in the README next to its numbers) and runs in its own
process; this driver only sequences them, captures their output, and writes the README with the
machine it ran on. A benchmark that fails is reported with its exit code and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
PACKAGES = (
    "deltalake",
    "chdb",
    "grpcio",
    "protobuf",
    "pyarrow",
    "duckdb",
    "polars",
    "numpy",
    "scipy",
    "streamlit",
    "opentelemetry-sdk",
)


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    module: str
    what: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    in_quick: bool = True  # False: --quick leaves it out (its quick size duplicates another)

    def argv(self, quick: bool) -> list[str]:
        return [sys.executable, "-m", self.module, *(self.quick if quick else self.full)]

    def command(self, quick: bool) -> str:
        """The command as a user types it from the repository root."""
        args = self.quick if quick else self.full
        return shlex.join([".venv/bin/python", "-m", self.module, *args])


BENCHES: tuple[Bench, ...] = (
    Bench(
        "ingest",
        "bench.ingest",
        "end-to-end durable ingest into `meshlens serve` (OTLP spans, ALS entries) from a "
        "separate load-generator process, vs a bare gRPC server that only parses (the "
        "floor) and, for traces, rotel with its blackhole exporter (the peer), on 2 and 1 "
        "cores; CPU-µs per item; peak RSS; exactly-once check",
        (),
        ("--seconds", "4", "--warmup", "1", "--cpus", "2"),
    ),
    Bench(
        "store_ingest",
        "bench.store_ingest",
        "the store alone: group-commit appends of 1000-span requests and conversion",
        (),
        ("--requests", "60", "--threads", "4", "--workers", "1"),
    ),
    Bench(
        "store_size",
        "bench.store_size",
        "bytes per span / per request on disk after compaction, compaction time, recovery "
        "time with N WAL segments pending",
        (),
        ("--requests", "30", "--als-messages", "200", "--pending", "2"),
    ),
    Bench(
        "decode_spans",
        "bench.decode_spans",
        "OTLP span decoding (protobuf -> Arrow) in 1 and 2 processes",
        (),
        ("--requests", "10", "--repeat", "1", "--procs", "1"),
    ),
    Bench(
        "decode_als",
        "bench.decode_als",
        "Envoy ALS messages and Istio text access-log lines -> requests rows",
        (),
        ("--messages", "10", "--lines", "10000"),
    ),
    Bench(
        "query",
        "bench.query",
        "service graph and golden signals over 1M and 10M requests (peak RSS), hours stored paired",
        (),
        ("--rows", "1M", "--repeat", "1"),
    ),
    Bench(
        "ack_latency",
        "bench.ack_latency",
        "gRPC ack latency p50/p99 of OTLP exports with the API idle vs while clients run the "
        "heaviest SQL the API allows, with query workers and (before issue 18) in-process",
        (),
        ("--seconds", "4", "--clients", "2"),
    ),
    Bench(
        "dashboard",
        "bench.dashboard",
        "time to first data of each Streamlit page's loaders, 10M requests over 6 h",
        ("--rows", "10000000", "--data-dir", ".bench-data/ui-10m"),
        ("--rows", "1000000", "--data-dir", ".bench-data/ui-1m"),
    ),
    Bench(
        "dashboard_1m",
        "bench.dashboard",
        "the same over 1M requests",
        ("--rows", "1000000", "--data-dir", ".bench-data/ui-1m"),
        (),
        in_quick=False,
    ),
    Bench(
        "app_pages",
        "bench.app_pages",
        "each Streamlit page through AppTest: first render (cold caches), second render "
        "(warm), one interaction, and the loaders each page called; targets page < 1 s, "
        "interaction < 0.5 s; 10M requests over 6 h",
        ("--rows", "10000000"),
        ("--rows", "1000000"),
    ),
    Bench(
        "judge",
        "bench.judge_sim",
        "canary judge on simulated rollouts over a grid of traffic models (error bursts, "
        "per-version drift, traffic): A/A false fails and passes, regressions passed and "
        "failed within 5 / 10 minutes; sequential vs Kayenta vs fixed-sample tests",
        (),
        ("--quick",),
    ),
    Bench(
        "delta_store",
        "bench.delta_store",
        "the shared store's Delta tables: serve ingest without and with --object-store (moto S3) "
        "with an exactly-once check; a local Delta commit per segment vs the layout; graph, "
        "signals and the floor group-by through Delta (local and moto) vs the plain files",
        (),
        (
            "--rows",
            "1M",
            "--cpus",
            "2",
            "--ingest-cpus",
            "2",
            "--seconds",
            "3",
            "--commits",
            "120",
            "--s3-commits",
            "20",
            "--repeat",
            "1",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    bench: Bench
    quick: bool
    rc: int
    seconds: float
    output: str
    when: str


def machine() -> list[str]:
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = "unknown"
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(m.group(1)) / 2**20:.1f} GiB" if m else mem
    except OSError:
        pass
    versions = []
    for p in PACKAGES:
        try:
            versions.append(f"{p} {importlib.metadata.version(p)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores (nproc {len(os.sched_getaffinity(0))})",
        f"- RAM: {mem}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        f"- load average at the start: {os.getloadavg()[0]:.2f}",
    ]


def run(bench: Bench, quick: bool, timeout: float | None) -> Outcome:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n=== {bench.name}: {bench.command(quick)}", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            bench.argv(quick),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            timeout=timeout,
            check=False,
        )
        rc, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        rc, out = -1, out + f"\n(timed out after {timeout:.0f}s)"
    seconds = time.monotonic() - t0
    print(out.rstrip(), flush=True)
    status = "ok" if rc == 0 else f"FAILED (exit {rc})"
    print(f"--- {bench.name}: {status} in {seconds:.0f}s", flush=True)
    return Outcome(bench, quick, rc, seconds, out, when)


def section(o: Outcome) -> str:
    status = "" if o.rc == 0 else f" — **failed (exit {o.rc})**"
    size = " (quick size)" if o.quick else ""
    return (
        f"<!-- bench:{o.bench.name} -->\n"
        f"### {o.bench.name}{size}{status}\n\n"
        f"{o.bench.what}.\n\n"
        f"```\n{o.bench.command(o.quick)}\n```\n\n"
        f"{o.when}, {o.seconds:.0f} s:\n\n"
        f"```text\n{o.output.rstrip()}\n```\n"
        f"<!-- /bench:{o.bench.name} -->\n"
    )


def previous_sections(text: str) -> dict[str, str]:
    pat = re.compile(r"<!-- bench:(\S+) -->\n.*?<!-- /bench:\1 -->\n", re.S)
    return {m.group(1): m.group(0) for m in pat.finditer(text)}


def write_readme(path: Path, outcomes: list[Outcome], quick: bool) -> None:
    old = previous_sections(path.read_text()) if path.exists() else {}
    new = {o.bench.name: section(o) for o in outcomes}
    parts = []
    for b in BENCHES:
        if b.name in new:
            parts.append(new[b.name])
        elif b.name in old:
            parts.append(old[b.name])
        else:
            parts.append(
                f"<!-- bench:{b.name} -->\n### {b.name}\n\nnot run yet: "
                f"`{b.command(False)}`\n<!-- /bench:{b.name} -->\n"
            )
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `make bench` (`python -m bench.run_all`); edit bench/run_all.py, not "
            "this file. Each section shows the command that produced it (run it alone to "
            "reproduce) and when it last ran; sections of benchmarks not in the latest run "
            "are kept from earlier runs. `--quick` runs use small sizes and say so.",
            "",
            "## Machine (latest run)",
            "",
            *machine(),
            "",
            "## Results",
            "",
            *parts,
        ]
    )
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    names = [b.name for b in BENCHES]
    p.add_argument("--only", nargs="+", choices=names, help="run only these")
    p.add_argument("--skip", nargs="+", choices=names, default=[], help="do not run these")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    p.add_argument("--readme", type=Path, default=README, help="where to write the results")
    p.add_argument("--no-readme", action="store_true", help="print only")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    if args.list:
        for b in BENCHES:
            print(f"{b.name:<14} {b.command(args.quick)}\n{'':<14} {b.what}")
        return 0
    chosen = [
        b
        for b in BENCHES
        if (b.name in args.only if args.only else b.in_quick or not args.quick)
        and b.name not in args.skip
    ]
    print("\n".join(machine()))
    outcomes = [run(b, args.quick, args.timeout) for b in chosen]
    print("\n=== summary")
    for o in outcomes:
        print(f"{o.bench.name:<14} {'ok' if o.rc == 0 else f'exit {o.rc}':<8} {o.seconds:6.0f} s")
    if not args.no_readme:
        write_readme(args.readme, outcomes, args.quick)
        print(f"results written to {args.readme}")
    return 0 if all(o.rc == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
