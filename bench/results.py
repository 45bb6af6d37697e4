"""Writing a bench run to results.json and results.csv (schema: docs/bench.md).

results.json holds everything: the machine, the software versions, and per scenario
its exact configuration (seed included) and every figure. results.csv flattens each
scenario, baseline and ratio into one row (its `kind` column says which) so a
spreadsheet can compare two runs.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from hellohi import eventloop

SCHEMA = "hellohi-bench/1"

# Python packages whose versions are worth recording (the ones the bench relies on).
PACKAGES = ("kcp", "uvloop", "pytest", "hypothesis")


def _package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent.parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def cpu_idle(sysfs: Path = Path("/sys")) -> dict | None:
    """How this machine's idle CPUs sleep, which sets what each wake-up costs.

    A loopback ping-pong puts each end to sleep once per round trip, so waking
    up can be most of a round trip. On this project's KVM guest, whose idle CPUs
    halt at once (cpuidle driver `haltpoll` with guest_halt_poll_ns 0), sockperf's
    UDP round trip took 50 us; with the guest polling up to 200 us before halting
    (the kernel's default), 11 us. Python's own work stays the same, so every
    ratio to sockperf moves with this setting (docs/bench.md, "Idle CPUs").
    None where the kernel does not say (not Linux, or no cpuidle).
    """
    idle = sysfs / "devices/system/cpu/cpuidle"
    driver = _read(idle / "current_driver")
    # Newer kernels name the governor file current_governor, older ones current_governor_ro.
    governor = _read(idle / "current_governor") or _read(idle / "current_governor_ro")
    if driver is None and governor is None:
        return None
    halt_poll = _read(sysfs / "module/haltpoll/parameters/guest_halt_poll_ns")  # only a KVM guest has it
    return {"driver": driver, "governor": governor,
            "guest_halt_poll_ns": int(halt_poll) if halt_poll is not None and halt_poll.isdigit() else None}


def environment(tool_versions: dict | None = None) -> dict:
    """The machine and software a run happened on, so two runs can be compared."""
    uname = platform.uname()
    return {
        "hostname": uname.node,
        "os": uname.system,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_idle": cpu_idle(),
        # TCP's figures on a lossy link depend on it (cubic backs off at each loss, bbr does
        # not), and it differs between machines; None where the kernel does not say.
        "tcp_congestion_control": _read(Path("/proc/sys/net/ipv4/tcp_congestion_control")),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        # The asyncio event loop every hellohi process of the run used (hellohi.eventloop).
        "event_loop": eventloop.resolve(),
        "packages": _package_versions(),
        "tools": tool_versions or {},
        "git_commit": _git_commit(),
    }


def new_run(argv: list[str], tool_versions: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": argv,
        "interrupted": False,  # True: stopped early; scenarios and baselines hold what finished
        "stopped_by": None,  # what stopped it early: "Ctrl-C" or "SIGTERM"
        "environment": environment(tool_versions),
        "scenarios": [],
        "baselines": [],
        "ratios": [],
    }


# Dicts keyed by client name: a column per client would give every workload columns of its
# own (bench-src0 ... bench-src49); one JSON cell keeps two runs' files comparable.
PER_CLIENT_FIELDS = ("srtt_ms", "rto_ms")


def _flatten(prefix: str, value, row: dict) -> None:
    if isinstance(value, dict) and value and prefix.rsplit(".", 1)[-1] not in PER_CLIENT_FIELDS:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, row)
    elif isinstance(value, (dict, list, tuple)):
        row[prefix] = json.dumps(value)  # an empty dict too: "{}" keeps its column
    else:
        row[prefix] = value


# The run's own fields, written into every row: a row copied into another
# spreadsheet still says when, how and on what machine it was measured.
RUN_FIELDS_IN_EVERY_ROW = ("schema", "started_utc", "command", "interrupted", "stopped_by", "environment")


def _run_fields(run: dict) -> dict:
    fields: dict = {}
    for key in RUN_FIELDS_IN_EVERY_ROW:
        _flatten(key, run.get(key), fields)
    return fields


def csv_rows(run: dict) -> list[dict]:
    """One row per scenario, per baseline and per ratio (the targets and their verdicts),
    nested keys joined with dots, then the run's fields (environment.kernel, ...), the
    same in every row."""
    run_fields = _run_fields(run)
    rows = []
    for kind in ("scenarios", "baselines", "ratios"):
        for item in run.get(kind, []):
            # Baselines and ratios have no id in results.json; here they get one to sort and filter by.
            row = {"kind": kind[:-1], "id": item.get("id") or item.get("name") or f"{item.get('tool')} {item.get('test')}"}
            _flatten("", item, row)
            row.update(run_fields)
            rows.append(row)
    return rows


class NotAJsonNumber(ValueError):
    """A figure that is NaN or infinite: JSON has no such numbers, and python -m reports
    refuses a results.json holding one, so the bench refuses to write it."""


def _entry_name(kind: str, index: int, entry) -> str:
    if not isinstance(entry, dict):
        return f"{kind}[{index}]"
    name = entry.get("id") or entry.get("name") or " ".join(str(entry[key]) for key in ("tool", "test") if key in entry)
    return f"{kind[:-1]} {name}" if name else f"{kind}[{index}]"


def _non_finite(value, path: str):
    """(path, value) of every NaN or infinite float in `value`, paths joined with dots."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _non_finite(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from _non_finite(inner, f"{path}[{index}]")


def non_finite_figures(run: dict) -> list[str]:
    """Where `run` holds NaN or infinity, each as 'scenario ID: field = nan' (or a
    baseline's tool and test, a ratio's name, or the run's own field)."""
    found = []
    for key, value in run.items():
        if key in ("scenarios", "baselines", "ratios") and isinstance(value, list):
            for index, entry in enumerate(value):
                found += [f"{_entry_name(key, index, entry)}: {path} = {bad}" for path, bad in _non_finite(entry, "")]
        else:
            found += [f"{path} = {bad}" for path, bad in _non_finite(value, key)]
    return found


def write(run: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """results.json and results.csv in `out_dir`. NotAJsonNumber, before either file is
    touched, when a figure is NaN or infinite: the report could not read the file."""
    if found := non_finite_figures(run):
        raise NotAJsonNumber(
            f"not writing results: {'; '.join(found)} is not a number JSON can hold (NaN or infinity), "
            "and python -m reports would refuse the file; the bench should have written null for a figure "
            "it could not measure: this is a bug in the bench, please report it with the table above")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    # allow_nan=False: checked above; this keeps json from writing NaN even if the check missed one.
    json_path.write_text(json.dumps(run, indent=2, sort_keys=False, allow_nan=False) + "\n")
    rows = csv_rows(run)
    # Each scenario's and baseline's columns in the order first met, the run's last.
    run_columns = list(_run_fields(run))
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in run_columns:
                columns.append(key)
    columns += run_columns
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path
