"""python -m bench: build a scenario matrix, run it, print ratios, write results.

    python -m bench                      quick default matrix (< 2 min on 2 cores; as root it adds
                                         the issue's emulated link: about 3 min)
    python -m bench --full --out results/full
    python -m bench --workloads hello,relay --protocols tcp --count 2000
    python -m bench --config matrix.toml
    python -m bench --server 192.0.2.10:5000 --protocols tcp   (a server on another computer)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Callable

from hellohi import eventloop
from hellohi.codec import DEFAULT_MAX_BODY

from . import baselines, paired, protocol_work, python_floor, results
from .clients import DEFAULT_PROTOCOLS
from .emulation.spec import LinkSpec
from .matrix import (ALL_PROTOCOLS, ALL_WORKLOADS, ISSUE4_LINK, MatrixError, check_payload_flag, default_matrix,
                     emulated_cells, flag_matrix, load_config, pair_problem, parse_link, to_scenarios)
from .ratios import compute_ratios, print_ratios
from .reachable import server_problem
from .runner import KCP_WORKLOADS, run_scenario
from .workloads import ID_WIDTH, WORKLOADS, Scenario


# --------------------------------------------------------------------- output


class Progress:
    """A plain-text progress bar on stderr (one line per step when not a terminal)."""

    def __init__(self, total: int, stream=None, width: int = 30):
        stream = stream or sys.stderr
        self.total, self.stream, self.width, self.done = total, stream, width, 0
        self.started = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def step(self, label: str) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.started:5.1f}s {label}"
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        self.step("done")
        if self.tty:
            self.stream.write("\n")


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _round_label(number: int, run: dict) -> str:
    return f" (round {number})" if run.get("rounds", 1) > 1 else ""


def print_table(run: dict, out=None) -> None:
    out = out or sys.stdout
    # As wide as the longest id: an emulated link's ids differ only at their end (...-loss0.05).
    width = max([len("scenario")] + [len(r["id"]) for r in run["scenarios"]])
    header = f"{'scenario':{width}s} {'status':14s} {'measure':10s} {'p50 us':>10s} {'p99 us':>10s} {'max us':>11s} {'deliv/sent':>13s} {'msg/s':>10s} {'MB/s':>8s} {'srv cpu s':>9s}"
    print(header, file=out)
    shown_round = None
    for r in run["scenarios"]:
        if run.get("rounds", 1) > 1 and r["config"].get("round", 1) != shown_round:
            shown_round = r["config"].get("round", 1)
            print(f"round {shown_round} of {run['rounds']}:", file=out)
        f = r.get("figures") or {}
        lat = f.get("latency") or {}
        d = f.get("delivery") or {}
        deliv = f"{d['delivered']}/{d['sent']}" if d else "-"
        print(f"{r['id']:{width}s} {r['status']:14s} {lat.get('measure') or '-':10s} {_fmt(lat.get('p50')):>10s} "
              f"{_fmt(lat.get('p99')):>10s} {_fmt(lat.get('max')):>11s} {deliv:>13s} {_fmt(f.get('messages_per_s'), 0):>10s} "
              f"{_fmt(f.get('goodput_MB_per_s'), 2):>8s} {_fmt((r.get('server') or {}).get('cpu_s'), 2):>9s}", file=out)
        if r["status"] != "ok":
            print(f"    {r.get('reason', '')}", file=out)
    for b in run["baselines"]:
        f = b.get("figures") or {}
        lat = f.get("latency") or {}
        line = f"{b['tool']} {b['test']}{_round_label(b.get('round', 1), run)}: {b['status']}"
        if lat:
            line += f"  round_trip p50 {lat['p50']} us p99 {lat['p99']} us"
        if "goodput_MB_per_s" in f:
            line += f"  {f['goodput_MB_per_s']:,.0f} MB/s"
        if "warm" in f:
            line += (f"  p50 back to back {f['warm']['p50']} us, after a {b['config']['sleep_us']:g} us sleep "
                     f"{f['after_sleep']['p50']} us")
        if "ratio_median" in f:
            cores = b["config"].get("cores")
            line += (f"  {len(f['blocks'])} blocks, " + (f"clients on core {cores['client']}, servers on core {cores['server']}"
                                                        if cores else "cores not pinned") + "; median ratio to sockperf: "
                     + ", ".join(f"{name} {_fmt(value, 2)}x" for name, value in f["ratio_median"].items()))
        if b["status"] != "ok":
            line += f"  ({b.get('reason', '')[:200]})"
        print(line, file=out)


# --------------------------------------------------------------------- main


def baseline_jobs(seconds: float, protocols: set[str] | None = None) -> list[tuple[str, Callable[[], dict]]]:
    """(name, job) for every baseline; each job returns one baseline entry of results.json.

    The kernel's and Python's floors are the machine's and always run. What runs
    hellohi's own code (its protocol work, its Hello/HI clients beside sockperf)
    runs only for the hellohi protocols in `protocols` (the run's, None: all), as
    --protocols promises: a TCP-only run measures no UDP client. What it leaves out is
    still an entry, "skipped" with the reason, so readers need not work it out."""
    jobs = [("sockperf tcp", lambda: baselines.sockperf_pingpong("tcp", seconds)),
            ("sockperf udp", lambda: baselines.sockperf_pingpong("udp", seconds)),
            ("iperf3 tcp", lambda: baselines.iperf3_throughput(seconds)),
            ("python echo tcp", lambda: python_floor.echo_pingpong("tcp", seconds)),
            ("python echo udp", lambda: python_floor.echo_pingpong("udp", seconds)),
            ("python stop-and-wait udp", lambda: python_floor.stop_and_wait_pingpong(seconds))]
    jobs += [(f"protocol work {protocol}", partial(protocol_work.measure, protocol, protocols=protocols))
             for protocol in ("udp", "udp-raw")]
    jobs += [(f"hello beside sockperf {kernel}", partial(paired.measure, kernel, protocols=protocols))
             for kernel in paired.CLIENTS]
    return jobs


def run_round(run: dict, number: int, rounds: int, jobs, scenarios: list[Scenario], remote, progress: Progress,
              noted_leftovers: set[str] | None = None) -> None:
    """One pass over the baselines and the matrix; every entry it adds to `run` says its round.

    `noted_leftovers`: emulated networks of killed runs already mentioned in an earlier round
    (and added to as this round mentions more), so `--rounds N` names each once, not N times."""
    prefix = f"round {number}/{rounds}: " if rounds > 1 else ""
    for name, job in jobs:
        progress.step(prefix + name)
        run["baselines"].append({**job(), "round": number})
        progress.advance()
    for sc in [s for s in scenarios if s.link != "emulated"]:  # loopback, or --server's remote
        progress.step(prefix + sc.id)
        run["scenarios"].append(run_scenario(sc, remote=remote))
        progress.advance()
    # One emulated network per distinct link, shared by that link's scenarios.
    by_link: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        if sc.link == "emulated":
            by_link.setdefault(json.dumps(sc.link_config, sort_keys=True), []).append(sc)
    noted = set() if noted_leftovers is None else noted_leftovers
    if by_link and (left := [name for name in leftover_runs() if name not in noted]):
        noted.update(left)
        print(f"\nnote: {len(left)} emulated network(s) left by killed runs ({', '.join(left)}); "
              f"remove them with: {sys.executable} -m bench.emulation cleanup", file=sys.stderr)
    for link_json, group in by_link.items():
        from .emulation import EmulatedNetwork, EmulationError

        progress.step(f"{prefix}setting up emulated link {link_json}")
        done = 0
        try:
            with EmulatedNetwork(LinkSpec(**json.loads(link_json))) as net:
                for sc in group:
                    progress.step(prefix + sc.id)
                    run["scenarios"].append(run_scenario(sc, net=net))
                    done += 1
                    progress.advance()
        except EmulationError as error:  # the link could not be built (or taken down): the run goes on
            for sc in group[done:]:
                run["scenarios"].append({"id": sc.id, "config": sc.as_dict(), "status": "error",
                                         "reason": f"the emulated link could not be built: {error}"})
                progress.advance()


def leftover_runs() -> list[str]:
    """Emulated networks that killed runs left behind (none where emulation cannot run)."""
    try:
        from .emulation import leftover_runs as find
    except ImportError:
        return []
    return find()


def emulation_problem() -> str | None:
    """None if emulated hosts can run here, else why not and what to do instead."""
    try:
        from .emulation import check_environment
    except ImportError as error:
        return f"bench/emulation is not available ({error})"
    try:
        check_environment()
    except Exception as error:  # EmulationError: says what is missing and how to fix it
        return str(error)
    return None


def _whole_at_least(low: int):
    """An argparse type for a whole number of at least `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {low}")
        return value
    return parse


_positive_int = _whole_at_least(1)
_seed = _whole_at_least(0)


def _positive_ints(text: str) -> list[int]:
    return [_positive_int(item) for item in text.split(",")]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _names(allowed: tuple[str, ...], what: str):
    """An argparse type for a comma-separated list of names, each one of `allowed`."""
    def parse(text: str) -> list[str]:
        names = text.split(",")
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not a {what}; choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))  # a name given twice runs once
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the larger matrix for the report")
    p.add_argument("--config", metavar="FILE", help="scenario matrix from a TOML or JSON file (see docs/bench.md)")
    p.add_argument("--workloads", type=_names(ALL_WORKLOADS, "workload"), metavar="LIST",
                   help=f"comma-separated, from: {', '.join(ALL_WORKLOADS)}")
    p.add_argument("--protocols", type=_names(ALL_PROTOCOLS, "protocol"), metavar="LIST",
                   help=f"comma-separated, from: {', '.join(ALL_PROTOCOLS)} (default: tcp,udp,udp-raw; the "
                        "default matrix, with no --workloads, --payloads or --clients, adds udp-turbo for hello, "
                        "relay and kcp-test; --full: all). kcp-test also takes udp and "
                        "udp-turbo: hellohi's reliability layer on KCP's simulated link")
    p.add_argument("--payloads", type=_positive_ints, metavar="BYTES,...",
                   help=f"body sizes, from {ID_WIDTH} (room for the message id; the KCP workloads from 8) to "
                        f"{DEFAULT_MAX_BODY}; hello and hello-raw send no body")
    p.add_argument("--clients", type=_positive_ints, metavar="N,...",
                   help="fan-in/fan-out widths")
    p.add_argument("--count", type=_positive_int, help="messages or pings per scenario (default: set per workload and payload; --list shows them)")
    p.add_argument("--window", type=_positive_int, help="bulk workloads: messages in flight (default 256)")
    p.add_argument("--seed", type=_seed, default=1, help="seeds kcp-test's simulated link (default: 1); an emulated link takes its own seed= in --link, "
                        "and its in-kernel drops and the session tokens are not seeded")
    p.add_argument("--rounds", type=_positive_int, default=1, metavar="N",
                   help="run the whole matrix, baselines included, N times in a row, and judge each ratio by its "
                        "median over the rounds (on a shared, noisy machine one round can be lucky or unlucky)")
    p.add_argument("--server", metavar="HOST:PORT", help="use this running server instead of starting one (real computers)")
    p.add_argument("--link", action="append", type=parse_link, metavar="SPEC",
                   help="also run across emulated hosts joined by this impaired link (root, Linux): with --workloads or "
                        "--config the matrix asked for, otherwise hello, relay and 64 B throughput per protocol and "
                        "KCP's echo; "
                        "e.g. loss=0.05,delay_ms=10,seed=1 (fields of bench.emulation.LinkSpec; repeatable). "
                        "'issue4' is loss=0.05,delay_ms=10,seed=1")
    p.add_argument("--no-emulation", action="store_true",
                   help="do not add the issue-4 emulated link that the default matrix adds when running as root "
                        "(--link still adds the links it names)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines: sockperf, iperf3, the Python echo, the in-process protocol work "
                        "and the Hello/HI turns beside sockperf (bench/paired.py)")
    p.add_argument("--baseline-seconds", type=_seconds, default=2.0, metavar="SECONDS",
                   help="how long each of sockperf, iperf3, the Python echo and the stop-and-wait floor runs "
                        "(not the Hello/HI turns beside sockperf; default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="write results.json and results.csv here")
    eventloop.add_loop_argument(p)  # for the servers it starts and its own clients
    p.add_argument("--list", action="store_true", help="print the scenarios and exit")
    return p


def build_scenarios(args, remote) -> list[Scenario]:
    """Every scenario of the run, all rounds; a MatrixError says why there can be none."""
    cells = _cells_asked_for(args)
    links = _links(args, cells, remote)
    if links:
        if args.workloads or args.config:  # the matrix asked for, across the link too
            cells = cells + [dict(c, link="emulated", link_config=link) for link in links for c in cells
                             if c["workload"] != "kcp-test"]
        else:
            cells = cells + emulated_cells(links, args.protocols, args.full)
    if args.count:
        for cell in cells:
            cell["count"] = args.count
    scenarios = to_scenarios(cells, args.seed, args.window)
    if remote:
        # Against a remote server only the hellohi workloads make sense, and their link is
        # whatever network joins this computer to that one.
        scenarios = [replace(s, link="remote") for s in scenarios if s.workload not in KCP_WORKLOADS]
    if not scenarios:
        raise MatrixError("no scenario to run: kcp-test and kcp-pingpong need a kcp-* protocol (kcp-test also "
                          "takes udp and udp-turbo), the other workloads need tcp, udp, udp-raw or udp-turbo, "
                          "throughput-raw needs tcp, and --server runs no KCP workload; see --help")
    scenarios = _once_each(scenarios, f"--config {args.config}: " if args.config else "")
    return [replace(sc, round=number) for number in range(1, args.rounds + 1) for sc in scenarios]


def _once_each(scenarios: list[Scenario], where: str) -> list[Scenario]:
    """The scenarios, each run once. The same scenario asked for twice runs once, as a name given
    twice does (--payloads 64,64; a file's emulated scenario that --link carries across its own
    link again). Two that share an id and differ otherwise (a config file's, in window, warmup,
    timeout or seed, which the id leaves out) would be two rows nobody can tell apart in
    results.csv and the report: they are refused."""
    first_of: dict[str, tuple[int, Scenario]] = {}
    once = []
    for number, scenario in enumerate(scenarios, 1):
        if scenario.id not in first_of:
            first_of[scenario.id] = (number, scenario)
            once.append(scenario)
            continue
        first_number, first = first_of[scenario.id]
        if _same_run(first, scenario):
            continue
        if replace(first, link_config={}) == replace(scenario, link_config={}):
            raise MatrixError(f"{where}scenarios {first_number} and {number} would both be {scenario.id!r}: "
                              + _links_apart_only_where_it_changes_nothing(first.link_config, scenario.link_config))
        raise MatrixError(f"{where}scenarios {first_number} and {number} would both be {scenario.id!r}: the id "
                          "names workload, protocol, payload, count, clients and link, not window, warmup, "
                          "timeout or seed; give one of them another count or payload, or run them as two "
                          "runs into two --out folders")
    return once


def _link_said(link_config: dict) -> str:
    return ",".join(f"{field}={value}" for field, value in link_config.items())


def _links_apart_only_where_it_changes_nothing(one: dict, other: dict) -> str:
    """Why two emulated links that share an id are refused, and what to do: the id names every
    link field that changes what the link does, so what sets them apart is one that does not."""
    specs = LinkSpec(**one), LinkSpec(**other)
    apart = [f.name for f in fields(LinkSpec) if getattr(specs[0], f.name) != getattr(specs[1], f.name)]
    said = f"their links ({_link_said(one)} and {_link_said(other)}) differ only in {', '.join(apart)}"
    if apart == ["reorder_ms"]:
        return (f"{said}, how long a reordered packet is held back, which does nothing without reorder above 0: "
                "they are the same link; give it once, or add reorder=SHARE to the one meant to reorder packets")
    return f"{said}, which the id leaves out; give the link once"


def _same_run(one: Scenario, other: Scenario) -> bool:
    """Whether two scenarios measure the same thing. Their links are compared as LinkSpecs: a
    file's {loss = 0.05, delay_ms = 10} is --link issue4's link, whose seed=1 is the default."""
    def link(scenario: Scenario) -> LinkSpec | None:
        return LinkSpec(**scenario.link_config) if scenario.link == "emulated" else None
    return replace(one, link_config={}) == replace(other, link_config={}) and link(one) == link(other)


def _wants_flag_matrix(args) -> bool:
    """--workloads, --payloads or --clients: a matrix of their combinations, not the default one."""
    return bool(args.workloads or args.payloads or args.clients)


def _cells_asked_for(args) -> list[dict]:
    """The matrix from a --config file, from flags, or the default one."""
    if args.config:
        given = [flag for flag, value in (("--full", args.full), ("--workloads", args.workloads),
                                          ("--protocols", args.protocols), ("--payloads", args.payloads),
                                          ("--clients", args.clients), ("--count", args.count)) if value]
        if given[:1] == ["--full"]:  # first in the list when given
            raise MatrixError(f"--config {args.config} describes the matrix, so --full cannot be added to it; "
                              "run the file's matrix without --full, or --full without --config")
        if given:
            raise MatrixError(f"--config {args.config} describes the matrix, so {given[0]} cannot be added to it; "
                              "put it in the file's [defaults] or [matrix] instead")
        return load_config(args.config)
    if not _wants_flag_matrix(args):
        return default_matrix(args.full, args.protocols)
    args.workloads = args.workloads or list(WORKLOADS)
    named_protocols = bool(args.protocols)
    args.protocols = args.protocols or list(DEFAULT_PROTOCOLS)
    check_payload_flag(args.payloads or [], args.workloads, args.protocols)
    cells = flag_matrix(args)
    for workload in args.workloads:  # left out of the matrix: say so, not silently
        problems = [pair_problem(workload, protocol) for protocol in args.protocols]
        if cells and all(problems):
            which = (f"--protocols {','.join(args.protocols)} names none" if named_protocols
                     else f"none of the default protocols ({','.join(args.protocols)}) is one; name one with --protocols")
            print(f"note: {workload} left out: {problems[0]}, and {which}", file=sys.stderr)
    return cells


def _links(args, cells: list[dict], remote) -> list[dict]:
    """The emulated links to run the matrix across, once emulated hosts are known to be possible."""
    if args.link and remote:
        raise MatrixError("--server measures a server on another computer and --link emulates hosts on this one; "
                          "use one of them in a run")
    if args.link:
        if (problem := emulation_problem()) is not None:
            raise MatrixError(f"--link needs emulated hosts, which cannot run here: {problem}\n"
                              "Instead: run the loopback bench without --link, or run this as root on Linux.")
        return args.link
    if any(cell.get("link") == "emulated" for cell in cells):  # asked for in a --config file
        if remote:
            raise MatrixError(f"--config {args.config} has scenarios with link = \"emulated\", which run on hosts "
                              "emulated on this computer, not against --server; leave one of them out")
        if (problem := emulation_problem()) is not None:
            raise MatrixError(f"--config {args.config} has scenarios with link = \"emulated\", which cannot run "
                              f"here: {problem}\nInstead: leave them out of the file, or run this as root on Linux.")
        return []
    if args.config or remote or args.no_emulation or _wants_flag_matrix(args):
        return []
    # The default matrix includes the issue's impaired link when this machine can emulate it.
    if (note := emulation_problem()) is not None:
        print(f"note: emulated hosts skipped: {note}", file=sys.stderr)
        return []
    return [dict(ISSUE4_LINK)]


def _unwritable(directory: str) -> str | None:
    """Why results cannot be written to `directory` (checked before a run of many minutes), or None."""
    if not directory.strip():
        return "the name is empty"
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return error.strerror or str(error)
    if not os.access(directory, os.W_OK):
        return "it is not writable"
    for name in ("results.json", "results.csv"):
        if (Path(directory) / name).is_dir():
            return f"{name} there is a directory"
    return None


class _Terminated(KeyboardInterrupt):
    """SIGTERM arrived (`kill`, a job scheduler, a closing session): stop as for Ctrl-C."""


def _stop_like_ctrl_c(signum, frame) -> None:
    # Raised where the run is, as Ctrl-C raises KeyboardInterrupt (hence the subclass):
    # servers and emulated hosts are stopped by their `finally` blocks and what finished
    # is written. The default action would end the process on the spot, orphaning the
    # scenario's server.
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    eventloop.apply_choice(args.loop)  # every process of the run inherits it
    remote = None
    if args.server is not None:  # (also "": an unset $SERVER must not quietly mean "start servers here")
        from hellohi.options import host_port
        try:
            remote = host_port(args.server)
        except argparse.ArgumentTypeError as error:
            build_parser().error(str(error))
    try:
        scenarios = build_scenarios(args, remote)
    except MatrixError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if remote and any(sc.protocol == "udp-turbo" for sc in scenarios):
        print("note: against --server, udp-turbo is turbo on this side only; the bench cannot set the other "
              "computer's server: start it with --preset turbo for turbo on both sides", file=sys.stderr)
    if args.list:
        for sc in scenarios:
            print(sc.id, json.dumps(sc.as_dict()))
        return 0
    if args.out is not None and (problem := _unwritable(args.out)):
        print(f"error: cannot write results to --out {args.out}: {problem}; pick another directory", file=sys.stderr)
        return 2
    if remote and (problem := server_problem(*remote, [sc.protocol for sc in scenarios])):
        print(f"error: {problem}", file=sys.stderr)
        return 2

    missing = baselines.missing_tools()
    if not args.no_baselines and not remote:
        for tool, hint in missing.items():
            print(f"note: {tool} is not installed, so its baseline is skipped; to measure it: {hint}", file=sys.stderr)
    run = results.new_run(["python", "-m", "bench", *argv], baselines.tool_versions())
    run["rounds"] = args.rounds
    jobs = [] if args.no_baselines or remote else baseline_jobs(args.baseline_seconds, {sc.protocol for sc in scenarios})
    progress = Progress(len(scenarios) + args.rounds * len(jobs))
    stopped_by = None
    previous_sigterm = signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        noted_leftovers: set[str] = set()
        for number in range(1, args.rounds + 1):
            run_round(run, number, args.rounds, jobs, [sc for sc in scenarios if sc.round == number], remote, progress,
                      noted_leftovers)
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code != 128 + signal.SIGTERM:
            raise  # (an emulated network turns SIGTERM into SystemExit(143) while it is up)
        # Servers and emulated hosts are already gone (their `finally` and `with` blocks
        # ran); what finished is still worth a table and a results file.
        stopped_by = "SIGTERM" if isinstance(stop, (_Terminated, SystemExit)) else "Ctrl-C"
        run["interrupted"] = True
        run["stopped_by"] = stopped_by
        where = f"below and in {args.out}" if args.out else "below"
        print(f"\ninterrupted ({stopped_by}): {progress.done} of {progress.total} steps finished; "
              f"what they measured is {where}", file=sys.stderr)
    else:
        progress.finish()
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    run["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run["ratios"] = compute_ratios(run)
    print_table(run)
    print_ratios(run["ratios"], run["environment"])
    if args.out:
        try:
            json_path, csv_path = results.write(run, args.out)
        except results.NotAJsonNumber as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"\nwrote {json_path} and {csv_path}")
    if stopped_by is not None:
        # The shell's code for a program stopped by that signal: 130 (128 + SIGINT), 143 (128 + SIGTERM).
        return 128 + (signal.SIGINT if stopped_by == "Ctrl-C" else signal.SIGTERM)
    failed = [r for r in run["scenarios"] if r["status"] == "error"]
    return 1 if failed else 0
