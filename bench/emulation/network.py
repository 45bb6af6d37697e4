"""Emulated hosts in Linux network namespaces, joined through an impaired router.

Topology (one run; every name starts with the run's prefix ``hh-<pid>-<4 hex>``)::

    <run>-c0  eth0 198.18.1.10 --+
    <run>-c1  eth0 198.18.1.11 --+-- br0 198.18.1.1  <run>-r  198.18.2.1 s0 ---- eth0 198.18.2.2  <run>-s
    ...                          |     (router: nftables loss, TUN forwarder, tbf rate)
                                 +-- (one veth per client, all in the router's bridge br0)

Only 198.18.0.0/15 (RFC 2544 benchmarking space) is used, and nothing is created in the root
namespace: the veth pairs are created inside the router namespace with their other end moved
straight into the host namespace, so deleting the namespaces deletes every link, the TUN device
and the nftables table with them.

Impairments live in the router (the only place that works here: dropping locally generated UDP
in the OUTPUT hook makes ``sendto`` fail with EPERM instead of losing the packet):

* loss     -- nftables, forward hook: ``numgen random mod 1000000 < N drop``, with named
              counters of packets seen and dropped per direction.
* delay, jitter, reorder, duplicate -- backend ``nft-tun``: policy routing sends packets arriving
              on br0 (up) or s0 (down) into a TUN device read by :mod:`bench.emulation.forwarder`,
              which writes them back after their delay; back in the kernel they are routed by the
              main table to the other side.  Backend ``netem``: a netem qdisc on the router's
              egress interface (s0 for up, br0 for down), used where the kernel has it.
* rate     -- ``tbf`` on the same egress interfaces (netem's own ``rate`` with the netem backend).

Use::

    with EmulatedNetwork(LinkSpec(loss=0.05, delay_ms=10), clients=2) as net:
        server = net.popen(net.server_ns, [sys.executable, "-m", "tcp.server", "--host", net.server_addr, ...])
        net.run(net.client_ns[0], [sys.executable, "-m", "tcp.client", "--server", f"{net.server_addr}:5000", ...])
        print(net.counters())

Everything is removed on exit, on an exception, and on SIGINT/SIGTERM (handlers are installed
while the context is active).  After a crash (SIGKILL), ``python -m bench.emulation cleanup``
removes what is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .spec import DIRECTIONS, LinkSpec

PREFIX = "hh-"
STATE_ROOT = Path("/run/hellohi-emulation")
REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_NET, SERVER_NET = "198.18.1.0/24", "198.18.2.0/24"
ROUTER_CLIENT_ADDR, ROUTER_SERVER_ADDR = "198.18.1.1", "198.18.2.1"
SERVER_ADDR = "198.18.2.2"
FIRST_CLIENT_HOST = 10
MAX_CLIENTS = 200
TUN_NAME = "hhtun"
NFT_TABLE = "hellohi_emulation"
FORWARDER_TABLE = "100"      # policy routing table that points into the TUN device
BACKENDS = ("auto", "nft-tun", "netem")
LOSS_IN = ("kernel", "forwarder")


class EmulationError(RuntimeError):
    """A problem the user can fix; the message says what it is and how to fix it."""


# Said whenever something here runs without root; names commands that exist (see docs/emulation.md).
NOT_ROOT = ("emulated hosts need root (they create network namespaces, veth links and nftables "
            "rules). Run the same command as root, e.g. `sudo .venv/bin/python -m bench.emulation up "
            "--loss 0.1` or `sudo .venv/bin/python -m bench --link loss=0.05,delay_ms=10`; without "
            "root, the loopback bench `python -m bench` needs no privileges")


# --------------------------------------------------------------------------- small helpers

def _sh(argv: list[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    # A session of its own: a Ctrl-C at the terminal goes to our whole process group, and
    # would kill an `ip netns del` halfway through a removal that we are finishing first.
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, start_new_session=True)
    if check and proc.returncode != 0:
        raise EmulationError(f"command failed: {' '.join(argv)}\n{proc.stderr.strip()}")
    return proc


def _in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def check_environment(*, need_tun: bool = True, need_tc: bool = False) -> None:
    """Raise :class:`EmulationError` naming the problem and the fix if emulation cannot run here."""
    if not sys.platform.startswith("linux"):
        raise EmulationError("emulated hosts need Linux network namespaces; on this OS use the loopback "
                             "bench (python -m bench) or a Linux machine/VM")
    if os.geteuid() != 0:
        raise EmulationError(NOT_ROOT)
    missing = [f"`{cmd}` (Debian package {pkg})" for cmd, pkg in
               (("ip", "iproute2"), ("nft", "nftables"), ("sysctl", "procps"))
               + ((("tc", "iproute2"),) if need_tc else ())
               if shutil.which(cmd) is None]
    if missing:
        raise EmulationError("missing commands: " + ", ".join(missing) +
                             ". Install them, e.g. `apt-get install iproute2 nftables procps`")
    if need_tun and not os.path.exists("/dev/net/tun"):
        raise EmulationError("/dev/net/tun is missing: load the TUN driver (`modprobe tun`) or use "
                             "backend='netem' where the kernel has netem")


_netem_cache: bool | None = None


def netem_available() -> bool:
    """True if this kernel can add a netem qdisc (tried in a scratch namespace, then removed)."""
    global _netem_cache
    if _netem_cache is None:
        ns = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}-probe"
        try:
            _sh(["ip", "netns", "add", ns])
            _sh(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
            _netem_cache = _sh(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"],
                               check=False).returncode == 0
        except EmulationError:
            _netem_cache = False
        finally:
            _sh(["ip", "netns", "del", ns], check=False)
    return _netem_cache


def new_run_name() -> str:
    """``hh-<pid>-<4 hex>``: the pid tells cleanup whether the creator is still alive."""
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------- the network

class EmulatedNetwork:
    """Client host namespace(s) and a server host namespace joined through an impaired router.

    ``EmulatedNetwork(spec, clients=1, *, up=None, down=None, backend="auto", loss_in="kernel",
    use_forwarder=None, detached=False)``

    spec      LinkSpec for both directions (``up`` = client -> server, ``down`` = server -> client);
              ``up=`` / ``down=`` override one direction.  None means a clean link.
    backend   "nft-tun" (nftables + TUN forwarder, works on any kernel with TUN), "netem", or
              "auto" (netem if the kernel has it, else nft-tun).
    loss_in   "kernel": loss by nftables (default).  "forwarder": loss decided by the seeded
              forwarder, so a run is reproducible packet for packet including its drops
              (nft-tun only; nftables then only counts).
    use_forwarder  force the TUN forwarder on (True) or leave it to the spec (None): it is used
              only for directions that need delay/jitter/reorder/duplicate (or forwarder loss).

    Attributes: name, router_ns, server_ns, client_ns (list), server_addr, client_addrs (list),
    backend (the one actually used), up, down.
    """

    def __init__(self, spec: LinkSpec | None = None, clients: int = 1, *, up: LinkSpec | None = None,
                 down: LinkSpec | None = None, backend: str = "auto", loss_in: str = "kernel",
                 use_forwarder: bool | None = None, detached: bool = False, name: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if loss_in not in LOSS_IN:
            raise ValueError(f"loss_in must be one of {LOSS_IN}, got {loss_in!r}")
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be 1..{MAX_CLIENTS}, got {clients}")
        base = spec or LinkSpec()
        self.up = up or base
        self.down = down or base
        self.requested_backend = backend
        self.backend = backend
        self.loss_in = loss_in
        self.use_forwarder = use_forwarder
        self.detached = detached
        self.name = name or new_run_name()
        self.router_ns = f"{self.name}-r"
        self.server_ns = f"{self.name}-s"
        self.client_ns = [f"{self.name}-c{i}" for i in range(clients)]
        self.server_addr = SERVER_ADDR
        self.client_addrs = [f"198.18.1.{FIRST_CLIENT_HOST + i}" for i in range(clients)]
        self.state_dir = STATE_ROOT / self.name
        self.forwarder: subprocess.Popen | None = None
        self.forwarded_directions: list[str] = []
        self._created_ns: list[str] = []
        self._name_is_ours = False  # set once start() finds no other run by this name: stop() removes it then
        self._procs: list[subprocess.Popen] = []
        self._old_handlers: dict[int, object] = {}
        self._stopping = False
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- context manager
    def __enter__(self) -> "EmulatedNetwork":
        self._install_signal_handlers()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def on_signal(signum, frame):
            if self._stopping:
                return  # already cleaning up: let it finish
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)  # unwinds through __exit__, which removes everything

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    # ---------------------------------------------------------------- names
    @property
    def namespaces(self) -> list[str]:
        return [self.router_ns, self.server_ns, *self.client_ns]

    def ns(self, which: str) -> str:
        """A namespace by name or alias: "router", "server", "client" (= client0), "client<i>"."""
        if which in self.namespaces:
            return which
        if which == "router":
            return self.router_ns
        if which == "server":
            return self.server_ns
        if which == "client":
            return self.client_ns[0]
        if which.startswith("client") and which[6:].isdigit() and int(which[6:]) < len(self.client_ns):
            return self.client_ns[int(which[6:])]
        raise ValueError(f"unknown namespace {which!r}; this run has {self.namespaces}")

    # ---------------------------------------------------------------- build
    def _forwarder_directions(self) -> list[str]:
        out = []
        for direction, spec in (("up", self.up), ("down", self.down)):
            if (self.use_forwarder or spec.needs_forwarder
                    or (self.loss_in == "forwarder" and spec.loss > 0)):
                out.append(direction)
        return out

    def start(self) -> None:
        """Build the namespaces, links, rules and forwarder.  Prefer ``with EmulatedNetwork(...)``."""
        if self.backend == "auto":
            check_environment(need_tun=False, need_tc=True)
            self.backend = "netem" if netem_available() else "nft-tun"
        if self.backend == "netem" and self.loss_in == "forwarder":
            raise EmulationError("loss in the forwarder (--loss-in forwarder) needs the nft-tun backend "
                                 "(--backend nft-tun): netem has no seeded forwarder")
        uses_tun = self.backend == "nft-tun" and bool(self._forwarder_directions())
        uses_tc = any(s.rate_mbit for s in (self.up, self.down)) or self.backend == "netem"
        check_environment(need_tun=uses_tun, need_tc=uses_tc)
        if self.backend == "netem" and not netem_available():
            raise EmulationError("this kernel has no netem qdisc (sch_netem); use the nft-tun backend "
                                 "(--backend nft-tun: nftables + TUN forwarder), which works without it")

        # A name already on this machine is another run's (a reused pid with the same four hex
        # digits, or a name passed in): build nothing, and leave what carries that name alone.
        if self.name in run_names(self.name):
            raise EmulationError(f"a run named {self.name} already exists on this machine "
                                 "(`python -m bench.emulation status` lists it); nothing was built")
        self._name_is_ours = True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        for ns in self.namespaces:
            proc = _sh(["ip", "netns", "add", ns], check=False)
            if proc.returncode != 0:
                raise EmulationError(f"cannot create network namespace {ns}: {proc.stderr.strip()}. "
                                     "This needs a Linux kernel with network namespaces and root "
                                     "(in a container: --privileged or CAP_SYS_ADMIN + CAP_NET_ADMIN)")
            self._created_ns.append(ns)
            # IPv6 off: no router solicitations or MLD reports mixing into the counted traffic
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._sysctl(self.router_ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                     "net.ipv4.conf.default.rp_filter=0")
        self._build_links()
        self._build_nft()
        if self.backend == "nft-tun" and self._forwarder_directions():
            self._start_forwarder()
        self._build_qdiscs()
        self._write_meta()

    def _sysctl(self, ns: str, *settings: str) -> None:
        _sh(_in_ns(ns, ["sysctl", "-qw", *settings]))

    def _build_links(self) -> None:
        r = self.router_ns
        batch = [
            f"link add s0 type veth peer name eth0 netns {self.server_ns}",
            "link add br0 type bridge",
            f"addr add {ROUTER_CLIENT_ADDR}/24 dev br0",
            f"addr add {ROUTER_SERVER_ADDR}/24 dev s0",
        ]
        for i, ns in enumerate(self.client_ns):
            batch += [f"link add c{i} type veth peer name eth0 netns {ns}", f"link set c{i} master br0",
                      f"link set c{i} up"]
        batch += ["link set br0 up", "link set s0 up"]
        # One packet per skb (no GSO super-packets of up to 64 KiB): otherwise nftables would see,
        # and drop, 40 TCP segments as one "packet", and loss would not be per packet.
        batch += [f"link set {dev} gso_max_segs 1" for dev in ["s0", "br0", *[f"c{i}" for i in range(len(self.client_ns))]]]
        _sh(["ip", "-n", r, "-batch", "-"], input="\n".join(batch) + "\n")
        hosts = [(self.server_ns, self.server_addr, ROUTER_SERVER_ADDR)]
        hosts += [(ns, addr, ROUTER_CLIENT_ADDR) for ns, addr in zip(self.client_ns, self.client_addrs)]
        for ns, addr, gateway in hosts:
            _sh(["ip", "-n", ns, "-batch", "-"],
                input=f"link set eth0 gso_max_segs 1\naddr add {addr}/24 dev eth0\nlink set eth0 up\n"
                      f"route add default via {gateway}\n")

    def _nft_ruleset(self) -> str:
        """The router's nftables table: per-direction counters, and the drop rule when loss is here."""
        lines = [f"table inet {NFT_TABLE} {{"]
        for d in DIRECTIONS:
            lines += [f"  counter {d}_seen {{ }}", f"  counter {d}_dropped {{ }}"]
        lines.append("  chain forward {")
        lines.append("    type filter hook forward priority 0; policy accept;")
        for d, spec, iif in (("up", self.up, "br0"), ("down", self.down, "s0")):
            # Matching the *entry* interface counts each packet once, even when it crosses the
            # forward hook a second time on its way back out of the TUN device.
            lines.append(f'    iifname "{iif}" counter name {d}_seen')
            if self.loss_in == "kernel" and spec.loss > 0:
                threshold = round(spec.loss * 1_000_000)
                lines.append(f'    iifname "{iif}" numgen random mod 1000000 < {threshold} '
                             f"counter name {d}_dropped drop")
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _build_nft(self) -> None:
        _sh(_in_ns(self.router_ns, ["nft", "-f", "-"]), input=self._nft_ruleset())

    def _start_forwarder(self) -> None:
        self.forwarded_directions = self._forwarder_directions()
        argv = [sys.executable, "-m", "bench.emulation.forwarder", "--tun", TUN_NAME,
                "--up", json.dumps(self.up.to_dict()), "--down", json.dumps(self.down.to_dict()),
                "--server-net", SERVER_NET, "--tag", self.name,
                "--stats-file", str(self.state_dir / "forwarder.json")]
        if self.loss_in == "forwarder":
            argv.append("--loss-here")
        if self.detached:
            argv.append("--detached")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        # Detached (`up`): the forwarder outlives this process, so it must not hold our stdin or
        # stderr (a caller waiting for our output would wait for it); its errors go to a log file.
        stderr = open(self.state_dir / "forwarder.log", "w") if self.detached else None
        self.forwarder = subprocess.Popen(
            _in_ns(self.router_ns, argv), cwd=REPO_ROOT, env=env, text=True,
            stdin=subprocess.DEVNULL if self.detached else subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, start_new_session=self.detached)
        if stderr:
            stderr.close()
        ready = self.forwarder.stdout.readline().strip()
        if ready != "ready":
            self.forwarder.wait(timeout=5)
            raise EmulationError(f"the TUN forwarder did not start (exit code {self.forwarder.returncode})")
        r = self.router_ns
        batch = [f"link set {TUN_NAME} up",
                 f"route add default dev {TUN_NAME} table {FORWARDER_TABLE}",
                 # if the forwarder dies its TUN and route vanish: drop, never bypass the impairment
                 f"route add blackhole default metric 4000 table {FORWARDER_TABLE}"]
        for d in self.forwarded_directions:
            iif = "br0" if d == "up" else "s0"
            batch.append(f"rule add iif {iif} lookup {FORWARDER_TABLE} pref {100 if d == 'up' else 101}")
        _sh(["ip", "-n", r, "-batch", "-"], input="\n".join(batch) + "\n")
        if self.detached:
            self.forwarder.stdout.close()

    def _build_qdiscs(self) -> None:
        for spec, dev in ((self.up, "s0"), (self.down, "br0")):
            tc = ["tc", "-n", self.router_ns, "qdisc", "add", "dev", dev, "root"]
            if self.backend == "netem" and (spec.needs_forwarder or spec.rate_mbit):
                _sh(tc + spec.netem_args())
            elif spec.rate_mbit:
                # burst: >= one MTU and ~4 ms worth of the rate; queue up to 100 ms before dropping
                burst = max(3200, int(spec.rate_mbit * 1e6 / 8 / 250))
                _sh(tc + ["tbf", "rate", spec.tc_rate, "burst", str(burst), "latency", "100ms"])

    def _write_meta(self) -> None:
        meta = {
            "name": self.name, "owner_pid": 0 if self.detached else os.getpid(), "detached": self.detached,
            # With the pid, names the creator for good: a pid is reused once its process is gone.
            "owner_start": None if self.detached else process_start(os.getpid()),
            "backend": self.backend, "loss_in": self.loss_in, "router_ns": self.router_ns,
            "server_ns": self.server_ns, "client_ns": self.client_ns, "server_addr": self.server_addr,
            "client_addrs": self.client_addrs, "up": self.up.to_dict(), "down": self.down.to_dict(),
            "forwarder_pid": self.forwarder.pid if self.forwarder else None,
            "forwarded_directions": self.forwarded_directions,
        }
        (self.state_dir / "meta.json").write_text(json.dumps(meta, indent=2))

    # ---------------------------------------------------------------- processes
    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``ns`` (``ip netns exec``); it is stopped on exit."""
        proc = subprocess.Popen(_in_ns(self.ns(ns), list(argv)), **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: list[str], *, check: bool = True, timeout: float | None = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` inside ``ns`` to completion; output is captured as text unless redirected."""
        if "stdout" not in kw and "stderr" not in kw:
            kw["capture_output"] = True
        kw.setdefault("text", True)
        return subprocess.run(_in_ns(self.ns(ns), list(argv)), check=check, timeout=timeout, **kw)

    # ---------------------------------------------------------------- counters
    def tcp_counters(self, which: str) -> dict:
        """The kernel's TCP counters of one host: OutSegs (segments sent, acks included) and
        RetransSegs (segments sent again). /proc/net/snmp is per network namespace, so these
        count that host's TCP alone."""
        snmp = self.run(which, ["cat", "/proc/net/snmp"]).stdout
        header, values = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
        return {name: int(values[header.index(name)]) for name in ("OutSegs", "RetransSegs")}

    def tcp_congestion_control(self, which: str) -> str:
        """The TCP congestion control a host's connections start with. A namespace takes
        the machine's default when it is made, so this is usually the host's."""
        return self.run(which, ["cat", "/proc/sys/net/ipv4/tcp_congestion_control"]).stdout.strip()

    def counters(self) -> dict:
        """Per direction: nft_seen, nft_dropped (nftables) and fwd_seen, fwd_dropped, forwarded,
        duplicated, reordered (the TUN forwarder; zero when it does not handle that direction)."""
        fwd = {}
        if self.forwarder and self.forwarder.poll() is None and not self.detached:
            with self._lock:
                self.forwarder.stdin.write("stats\n")
                self.forwarder.stdin.flush()
                fwd = json.loads(self.forwarder.stdout.readline())
        elif self.forwarder:
            fwd = read_forwarder_stats(self.state_dir, self.forwarder.pid)
        return combine_counters(read_nft_counters(self.router_ns), fwd)

    # ---------------------------------------------------------------- teardown
    def stop(self) -> None:
        """Remove everything this run created.  Safe to call twice and after a failed start."""
        self._stopping = True
        try:
            for proc in self._procs:
                _stop_process(proc)
            self._procs.clear()
            if self.forwarder is not None:
                if self.forwarder.stdin:
                    try:
                        self.forwarder.stdin.close()  # end of stdin: the forwarder exits by itself
                    except OSError:
                        pass
                _stop_process(self.forwarder)
                if self.forwarder.stdout:
                    self.forwarder.stdout.close()
                self.forwarder = None
            if self._name_is_ours:
                # (None: every namespace by the run's name, in case a signal came between
                # creating one and noting it in _created_ns.)
                remove_run(self.name, namespaces=self._created_ns or None)
            self._created_ns.clear()
        finally:
            self._stopping = False
            self._restore_signal_handlers()


def _stop_process(proc: subprocess.Popen, grace: float = 2.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- counters

def read_nft_counters(router_ns: str) -> dict:
    proc = _sh(_in_ns(router_ns, ["nft", "-j", "list", "counters", "table", "inet", NFT_TABLE]))
    out = {}
    for item in json.loads(proc.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter:
            out[counter["name"]] = counter["packets"]
    return out


def read_forwarder_stats(state_dir: Path, pid: int | None) -> dict:
    """Counters of a run's forwarder from its stats file (``state_dir`` is the run's state directory).

    While the forwarder runs, SIGUSR1 makes it rewrite the file first.  Only then: once it is gone
    (its run a leftover) the recorded pid may belong to an unrelated process, which SIGUSR1 would
    kill; the file then holds the counters the forwarder last wrote.
    """
    path = state_dir / "forwarder.json"
    before = path.stat().st_mtime_ns if path.exists() else 0
    if pid and is_forwarder_of(pid, state_dir.name):
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_mtime_ns == before):
            time.sleep(0.01)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def combine_counters(nft: dict, fwd: dict) -> dict:
    out = {}
    for d in DIRECTIONS:
        f = fwd.get(d, {})
        out[d] = {
            "nft_seen": nft.get(f"{d}_seen", 0), "nft_dropped": nft.get(f"{d}_dropped", 0),
            "fwd_seen": f.get("seen", 0), "fwd_dropped": f.get("dropped", 0),
            "forwarded": f.get("forwarded", 0), "duplicated": f.get("duplicated", 0),
            "reordered": f.get("reordered", 0),
        }
    return out


# --------------------------------------------------------------------------- leftovers

def list_namespaces() -> list[str]:
    proc = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _forwarder_tag(pid: int) -> str | None:
    """The ``--tag`` (its run's name) on the command line of forwarder ``pid``; None if ``pid`` is
    not a forwarder (or no longer exists)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"bench.emulation.forwarder" not in argv or b"--tag" not in argv:
        return None
    after = argv.index(b"--tag") + 1
    return argv[after].decode(errors="replace") if after < len(argv) else ""


def is_forwarder_of(pid: int, run: str) -> bool:
    """True if ``pid`` is the running forwarder of ``run``, so it is safe to signal."""
    return _forwarder_tag(pid) == run and _process_running(pid)


def _processes_tagged(run: str, *, exact: bool = False) -> list[int]:
    """Pids of forwarders whose ``--tag`` starts with ``run`` (a prefix, as find_leftovers asks), or
    is ``run`` itself with ``exact`` (so removing hh-2418-abcd never touches hh-2418-abcd7...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        tag = _forwarder_tag(int(entry.name))
        if tag is not None and (tag == run if exact else tag.startswith(run)):
            pids.append(int(entry.name))
    return pids


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/PID/stat (state, parent, ... start time is the 20th of them); None
    if ``pid`` is gone.  They follow the command name in parentheses, which may itself hold
    spaces and parentheses: hence the last ")"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _process_running(pid: int) -> bool:
    """True while ``pid`` runs.  A zombie has finished: it only waits for its parent to reap it
    (which, for an orphan in a container, may never happen), so it does not count."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat); None if it
    is gone.  A pid alone may name a new process once the old one has gone; pid and start
    time together name one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2.0
    for pid in pids:
        while time.monotonic() < deadline and _process_running(pid):
            time.sleep(0.01)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_run(run: str, namespaces: list[str] | None = None) -> None:
    """Delete a run's processes, namespaces (with their links, TUN and nft table) and state."""
    if namespaces is None:
        namespaces = [ns for ns in list_namespaces() if ns.startswith(run + "-")]
    for ns in namespaces:
        # processes still inside would keep the namespace (and its links) alive after `netns del`
        pids = [int(p) for p in _sh(["ip", "netns", "pids", ns], check=False).stdout.split()]
        _kill_pids(pids)
    _kill_pids(_processes_tagged(run, exact=True))
    for ns in namespaces:
        _sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(STATE_ROOT / run, ignore_errors=True)


def run_names(prefix: str = PREFIX) -> set[str]:
    """Runs (``hh-<pid>-<hex>``) that have a namespace or a state directory matching ``prefix``."""
    names = set()
    for ns in list_namespaces():
        parts = ns.split("-")
        if ns.startswith(prefix) and len(parts) >= 4 and ns.startswith(PREFIX):
            names.add("-".join(parts[:3]))
    if STATE_ROOT.exists():
        names.update(p.name for p in STATE_ROOT.iterdir() if p.name.startswith(prefix))
    return names


def read_meta(run: str) -> dict:
    """The run's meta.json (settings, who made it); {} if it has none or it cannot be read."""
    try:
        return json.loads((STATE_ROOT / run / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def run_creator_pid(run: str) -> int | None:
    """The pid in the run's name ``hh-<pid>-<hex>``: the process that built it (None if no pid)."""
    try:
        return int(run.split("-")[1])
    except (IndexError, ValueError):
        return None


def made_by_up(run: str) -> bool:
    """True for a run that ``python -m bench.emulation up`` made (it stays until ``down``)."""
    return bool(read_meta(run).get("detached"))


def run_owner_alive(run: str) -> bool:
    """A run is in use if its creator lives (its pid, started when meta.json says), or if `up` made
    it (detached) and it still works.

    A detached run has no creator to wait for; it counts as broken (a leftover) once its router
    namespace is gone or, if it had a TUN forwarder, that forwarder has died (the link would then
    drop everything: see the blackhole route in ``_start_forwarder``).
    """
    meta = read_meta(run)
    if meta.get("detached"):
        if meta.get("router_ns") not in list_namespaces():
            return False
        return not meta.get("forwarder_pid") or bool(_processes_tagged(run, exact=True))
    pid = run_creator_pid(run)
    # A zombie has finished too: a SIGKILLed bench stays one until its parent reaps it.
    if pid is None or pid == os.getpid() or not _process_running(pid):
        return False
    # The pid lives, but is it still the creator? Not if the process under it started at
    # another time: the creator died and its pid went to someone else. (A run whose meta
    # is not written yet, or was written before owner_start existed, has only the pid.)
    started = meta.get("owner_start")
    return started is None or process_start(pid) == started


def leftover_runs(prefix: str = PREFIX) -> list[str]:
    """Names of runs left behind, sorted: their creator pid is dead (killed before it could clean
    up, e.g. by SIGKILL), or `up` made them and they no longer work.  These are exactly what
    ``python -m bench.emulation cleanup`` removes; [] where emulation cannot run (not Linux, no
    ``ip`` command).  Needs no root to look."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        return []
    return sorted(run for run in run_names(prefix) if not run_owner_alive(run))


def cleanup(prefix: str = PREFIX, *, force: bool = False) -> tuple[list[str], list[str]]:
    """Remove leftovers of crashed runs whose name starts with ``prefix``.

    Runs whose creator still lives (or that ``up`` made) are skipped unless ``force``.
    Returns (removed, skipped) run names.
    """
    check_environment(need_tun=False)
    removed, skipped = [], []
    for run in sorted(run_names(prefix)):
        if not force and run_owner_alive(run):
            skipped.append(run)
            continue
        remove_run(run)
        removed.append(run)
    return removed, skipped


def find_leftovers(prefix: str) -> list[str]:
    """Everything still on this machine with ``prefix`` in its name: namespaces, links in the root
    namespace, root-namespace nft tables, forwarder processes, state directories.  [] = clean."""
    found = [f"netns {ns}" for ns in list_namespaces() if ns.startswith(prefix)]
    links = _sh(["ip", "-o", "link", "show"], check=False).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if prefix in line]
    tables = _sh(["nft", "list", "tables"], check=False).stdout
    found += [f"nft {line}" for line in tables.splitlines() if prefix in line]
    found += [f"process {pid}" for pid in _processes_tagged(prefix)]
    if STATE_ROOT.exists():
        found += [f"state {p}" for p in STATE_ROOT.iterdir() if p.name.startswith(prefix)]
    return found
