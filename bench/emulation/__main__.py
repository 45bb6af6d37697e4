"""``python -m bench.emulation``: poke at an emulated link by hand, and clean up after crashes.

    up        build a link that stays until `down` (prints the namespaces and commands to try)
    status    list the runs on this machine with their settings and counters, leftovers marked
    down      remove a run made by `up` (its exact name; --force for a run something else made)
    cleanup   remove leftovers of crashed runs (by name prefix)
    check     say whether emulation can run here and which backend it would use

Needs root (except `check`); without it the error says so and what to run instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from contextlib import contextmanager

from .network import (NOT_ROOT, PREFIX, REPO_ROOT, STATE_ROOT, EmulatedNetwork, EmulationError, check_environment, cleanup,
                      combine_counters, is_forwarder_of, list_namespaces, made_by_up, netem_available,
                      read_forwarder_stats, read_meta, read_nft_counters, remove_run, run_creator_pid, run_names,
                      run_owner_alive)
from .spec import LinkSpec

CLEANUP = "python -m bench.emulation cleanup"


def _spec_from_args(args) -> LinkSpec:
    return LinkSpec(loss=args.loss, delay_ms=args.delay_ms, jitter_ms=args.jitter_ms, reorder=args.reorder,
                    reorder_ms=args.reorder_ms, duplicate=args.duplicate, rate_mbit=args.rate_mbit,
                    seed=args.seed)


def cmd_up(args) -> int:
    spec = _spec_from_args(args)
    kw = {"both": {"spec": spec}, "up": {"up": spec}, "down": {"down": spec}}[args.direction]
    net = EmulatedNetwork(**kw, clients=args.clients, backend=args.backend, loss_in=args.loss_in, detached=True)
    try:
        net.start()
    except BaseException:
        net.stop()
        raise
    py = sys.executable  # the interpreter that ran us (the venv's), so no venv needs activating
    print(f"run {net.name} is up (backend {net.backend}); remove it with: {py} -m bench.emulation down {net.name}")
    print(f"  (run the commands printed here from {REPO_ROOT}, where Python finds `bench`)")
    print(f"  server  {net.server_ns:<20} {net.server_addr}")
    for ns, addr in zip(net.client_ns, net.client_addrs):
        print(f"  client  {ns:<20} {addr}")
    print(f"  router  {net.router_ns}")
    print(f"  up   (client->server): {net.up}")
    print(f"  down (server->client): {net.down}")
    print("try:")
    print(f"  ip netns exec {net.server_ns} {py} -m bench.emulation.probe udp-echo --port 7 &")
    print(f"  ip netns exec {net.client_ns[0]} {py} -m bench.emulation.probe udp-ping --to {net.server_addr}:7 --count 100")
    print(f"  ip netns exec {net.client_ns[0]} ping -c 10 {net.server_addr}      # if iputils-ping is installed")
    print(f"  {py} -m bench.emulation status")
    return 0


def cmd_status(args) -> int:
    check_environment(need_tun=False)
    runs = sorted(run_names(args.prefix))
    if not runs:
        print(f"no emulated networks with prefix {args.prefix!r}")
        return 0
    namespaces = set(list_namespaces())
    for run in runs:
        meta = read_meta(run)
        router = meta.get("router_ns", f"{run}-r")
        leftover = not run_owner_alive(run)
        if meta.get("detached"):
            print(f"{run}: backend {meta.get('backend', '?')}, made by up (detached; stays until `down`)")
        else:
            state = "which is gone" if leftover else "still running"
            print(f"{run}: backend {meta.get('backend', '?')}, made by pid {run_creator_pid(run)} ({state})")
        if leftover:
            print(f"  LEFTOVER: {_why_leftover(meta, router in namespaces)}; remove it with `{CLEANUP}`")
        if router not in namespaces:
            continue
        print(f"  server {meta.get('server_ns')} {meta.get('server_addr')}; clients "
              + ", ".join(f"{n} {a}" for n, a in zip(meta.get("client_ns", []), meta.get("client_addrs", []))))
        print(f"  up   {meta.get('up')}\n  down {meta.get('down')}")
        forwarder = meta.get("forwarder_pid")
        if forwarder and not is_forwarder_of(forwarder, run):
            print("  (its forwarder is not running: the forwarder counters are those it last wrote)")
        counters = combine_counters(read_nft_counters(router), read_forwarder_stats(STATE_ROOT / run, forwarder))
        for direction, c in counters.items():
            print(f"  {direction:<4} " + " ".join(f"{k}={v}" for k, v in c.items()))
    return 0


def _why_leftover(meta: dict, has_router: bool) -> str:
    """Why the run of ``meta`` is a leftover (run_owner_alive said it is not in use), for `status`."""
    if not meta.get("detached"):
        return "its creator was killed before it could remove it (SIGKILL, a crash)"
    if not has_router:
        return "its router namespace is gone"
    return "its TUN forwarder is gone, so the link drops every packet"


def _why_not_down(run: str) -> str | None:
    """Why `down` without --force leaves ``run`` alone; None for a run `up` made, which is what
    `down` is for.  A run a bench or a test made belongs to that process: while it runs, removing
    the network would break it mid-run; once it is gone, `cleanup` is the command for leftovers."""
    if made_by_up(run):
        return None
    pid = run_creator_pid(run)
    if run_owner_alive(run):
        return (f"{run} belongs to pid {pid}, which is still running (a bench or a test?): removing it "
                f"would cut that run's network mid-run. Let it finish (it removes its own network), or "
                f"use `down --force {run}`")
    return (f"{run} was not made by `up` but by pid {pid}, which is gone: it is a leftover; remove it "
            f"with `{CLEANUP}` (or `down --force {run}`)")


def cmd_down(args) -> int:
    check_environment(need_tun=False)
    run = args.name
    named_so = run_names(run)  # every run with a name or a namespace that starts with what was given
    if run not in named_so:  # the whole name: `down hh-2418` must never remove hh-24187-75c7
        print(f"no run named {run!r}; {_what_was_meant(run, named_so)}", file=sys.stderr)
        return 1
    if not args.force and (refusal := _why_not_down(run)):
        print(f"refused: {refusal}", file=sys.stderr)
        return 1
    with _finish_before_stopping(f"removing {run}"):
        print(f"removing {run} ...", flush=True)
        remove_run(run)
    print(f"removed {run}")
    return 0


def _what_was_meant(given: str, runs: set[str]) -> str:
    owners = sorted(run for run in runs if given.startswith(run + "-"))
    if owners:  # a namespace's name, such as the server's hh-...-s
        return f"{given} is a namespace of run {owners[0]}: give the run's name, `down {owners[0]}`"
    if runs:
        return f"runs whose names start so: {', '.join(sorted(runs))}; give the whole name"
    return "`python -m bench.emulation status` lists the runs on this machine"


@contextmanager
def _finish_before_stopping(doing: str):
    """Ctrl-C or SIGTERM in the middle of a removal would leave half a run behind (its
    forwarder gone, its namespaces not): the removal finishes first, and says so."""
    told = False

    def on_signal(signum, frame):
        nonlocal told
        if not told:
            print(f"\n{doing}: finishing first, so that no half-removed network is left", file=sys.stderr)
            told = True

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def cmd_cleanup(args) -> int:
    with _finish_before_stopping("cleaning up"):
        removed, skipped = cleanup(args.prefix, force=args.force)
    for run in removed:
        print(f"removed {run}")
    for run in skipped:
        print(f"kept {run}: its creator is still running, or `up` made it (use `down`, or --force)")
    if not removed and not skipped:
        print(f"nothing to clean up (prefix {args.prefix!r})")
    return 0


def cmd_check(args) -> int:
    try:
        check_environment(need_tun=True, need_tc=True)
    except EmulationError as e:
        print(f"cannot emulate here: {e}")
        return 1
    netem = netem_available()
    print(f"root: yes; nftables: yes; TUN: yes; netem: {'yes' if netem else 'no'}")
    print(f"backend 'auto' would use: {'netem' if netem else 'nft-tun'} (force one with --backend)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # The module docstring's first line and last paragraph; its command list is the subparsers' help.
    p = argparse.ArgumentParser(prog="python -m bench.emulation", description=__doc__.splitlines()[0],
                                epilog=__doc__.strip().split("\n\n")[-1])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a link that stays until `down` (prints the namespaces and commands to try)")
    up.add_argument("--loss", type=float, default=0.0, help="share of packets lost, e.g. 0.05")
    up.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    up.add_argument("--jitter-ms", type=float, default=0.0,
                    help="each packet's delay is drawn from delay-ms +- this (nft-tun: jitter alone never reorders; netem's may)")
    up.add_argument("--reorder", type=float, default=0.0, help="share of packets held back")
    up.add_argument("--reorder-ms", type=float, default=5.0, help="how long a reordered packet is held back (nft-tun; netem reorders by its own rule)")
    up.add_argument("--duplicate", type=float, default=0.0, help="share of packets sent twice")
    up.add_argument("--rate-mbit", type=float, default=None, help="bottleneck rate, 0.001 (1 kbit/s) to 100000")
    up.add_argument("--seed", type=int, default=1,
                    help="seeds the nft-tun forwarder's random source: the same seed, the same fate for the n-th packet (netem: no effect)")
    up.add_argument("--direction", choices=["both", "up", "down"], default="both",
                    help="impair client->server (up), server->client (down) or both")
    up.add_argument("--clients", type=int, default=1, help="client namespaces, each with its own address")
    up.add_argument("--backend", choices=["auto", "nft-tun", "netem"], default="auto",
                    help="auto: netem where the kernel has it, else nftables and a TUN forwarder (docs/emulation.md)")
    up.add_argument("--loss-in", choices=["kernel", "forwarder"], default="kernel",
                    help="kernel: nftables drops (not seeded); forwarder: seeded drops, reproducible (nft-tun only)")
    st = sub.add_parser("status", help="list the runs on this machine with their settings and counters, leftovers marked")
    st.add_argument("--prefix", default=PREFIX, help=f"only runs whose name starts with this (default {PREFIX})")
    dn = sub.add_parser("down", help="remove a run made by `up` (its exact name; --force for a run something else made)")
    dn.add_argument("name", help="the run's whole name (hh-<pid>-<hex>) as printed by `up`")
    dn.add_argument("--force", action="store_true",
                    help="also a run that `up` did not make: a live bench's (it breaks mid-run) or a leftover")
    cl = sub.add_parser("cleanup", help="remove leftovers of crashed runs (by name prefix)")
    cl.add_argument("--prefix", default=PREFIX, help=f"only runs whose name starts with this (default {PREFIX})")
    cl.add_argument("--force", action="store_true", help="also runs whose creator still lives, and `up` runs")
    sub.add_parser("check", help="say whether emulation can run here and which backend it would use")
    return p


def as_root_command(argv: list[str]) -> str:
    """The command line the user ran, prefixed with sudo: what to run instead without root."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd() + os.sep) else sys.executable
    return shlex.join(["sudo", python, "-m", "bench.emulation", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    handler = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "cleanup": cmd_cleanup,
               "check": cmd_check}[args.cmd]
    if args.cmd != "check" and sys.platform.startswith("linux") and os.geteuid() != 0:
        # Said before anything is tried, so nothing half-built is left and no traceback is shown.
        print(f"error: {NOT_ROOT}\nrun instead: {as_root_command(argv)}", file=sys.stderr)
        return 2
    try:
        code = handler(args)
        sys.stdout.flush()  # here, where a reader that went away is caught, not as Python exits
        return code
    except (EmulationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `status | head`: stop quietly, as hellohi/console.py says why
        # (this package uses the standard library only, so it does not import that module)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
