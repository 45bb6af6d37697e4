"""The TUN forwarder's decisions (bench.emulation.impair): no root, fake clock, seeded randomness."""

import json
import math
import shutil
import subprocess
import sys
import time

import pytest

from bench.emulation import EmulatedNetwork, EmulationError, Impairer, LinkSpec
from bench.emulation import network
from bench.emulation import __main__ as cli
from bench.emulation.forwarder import packet_direction

import ipaddress


def fates(spec, n=2000, direction="up", apply_loss=True, step=0.001):
    imp = Impairer(spec, direction, apply_loss=apply_loss)
    return [imp.decide(i * step) for i in range(n)], imp


def binomial_tolerance(p, n, sigmas=5.0):
    # 5 standard deviations of a Binomial(n, p) share: a correct implementation fails this
    # less than once in a million runs.
    return sigmas * math.sqrt(p * (1 - p) / n)


def test_same_seed_same_decisions_packet_for_packet():
    spec = LinkSpec(loss=0.1, delay_ms=10, jitter_ms=5, reorder=0.05, duplicate=0.05, seed=42)
    a, _ = fates(spec)
    b, _ = fates(spec)
    assert a == b


def test_other_seed_or_direction_gives_other_decisions():
    spec = LinkSpec(loss=0.1, reorder=0.1, duplicate=0.1, seed=42)
    a, _ = fates(spec)
    assert fates(spec.with_(seed=43))[0] != a
    assert fates(spec, direction="down")[0] != a


def test_decisions_do_not_depend_on_other_knobs():
    # Each packet draws the same four random numbers whatever the spec: raising the duplicate
    # share leaves the drops exactly where they were.
    a, _ = fates(LinkSpec(loss=0.2, seed=7))
    b, _ = fates(LinkSpec(loss=0.2, duplicate=0.3, seed=7))
    assert [f.dropped for f in a] == [f.dropped for f in b]


@pytest.mark.parametrize("field", ["loss", "duplicate", "reorder"])
def test_shares_within_binomial_bound(field):
    n, p = 5000, 0.2
    out, imp = fates(LinkSpec(**{field: p}, seed=3), n=n)
    observed = {"loss": imp.counters.dropped, "duplicate": imp.counters.duplicated,
                "reorder": imp.counters.reordered}[field] / n
    assert abs(observed - p) <= binomial_tolerance(p, n)


def test_loss_not_applied_when_the_kernel_drops():
    out, imp = fates(LinkSpec(loss=0.5), apply_loss=False)
    assert not any(f.dropped for f in out) and imp.counters.dropped == 0


def test_fixed_delay():
    out, _ = fates(LinkSpec(delay_ms=20), n=100)
    for i, f in enumerate(out):
        assert f.release_at == pytest.approx((i * 0.001 + 0.020,))


def test_no_delay_means_release_now():
    out, _ = fates(LinkSpec(), n=100)
    assert all(f.release_at == (i * 0.001,) for i, f in enumerate(out))


def test_jitter_stays_in_range_and_never_reorders():
    out, _ = fates(LinkSpec(delay_ms=10, jitter_ms=5), n=2000, step=0.0001)
    releases = [f.release_at[0] for f in out]
    assert releases == sorted(releases)           # FIFO kept
    for i, r in enumerate(releases):
        assert r - i * 0.0001 >= 0.005 - 1e-9      # never below delay - jitter
    # without the FIFO rule some packets would leave at delay - jitter; spread is really there
    assert max(r - i * 0.0001 for i, r in enumerate(releases)) > 0.014


def test_reordered_packets_are_overtaken():
    out, imp = fates(LinkSpec(reorder=0.1, reorder_ms=5, seed=9), n=1000)
    assert imp.counters.reordered > 0
    for i, f in enumerate(out):
        expected = i * 0.001 + (0.005 if f.reordered else 0.0)
        assert f.release_at[0] == pytest.approx(expected)
    # the packet right after a reordered one leaves first
    i = next(i for i, f in enumerate(out[:-1]) if f.reordered and not out[i + 1].reordered)
    assert out[i + 1].release_at[0] < out[i].release_at[0]


def test_duplicates_are_two_copies_and_counted():
    out, imp = fates(LinkSpec(duplicate=0.25, seed=5), n=1000)
    dups = [f for f in out if f.duplicated]
    assert dups and all(len(f.release_at) == 2 for f in dups)
    assert imp.counters.forwarded == 1000 + len(dups)
    assert imp.counters.seen == 1000


def test_spec_validation():
    with pytest.raises(ValueError):
        LinkSpec(loss=1.5)
    with pytest.raises(ValueError):
        LinkSpec(delay_ms=-1)
    with pytest.raises(ValueError):
        LinkSpec(rate_mbit=0)
    with pytest.raises(ValueError, match="LinkSpec.seed must be a whole number >= 0, got -1"):
        LinkSpec(seed=-1)
    assert LinkSpec(delay_ms=1).needs_forwarder and not LinkSpec(loss=0.3, rate_mbit=5).needs_forwarder
    assert LinkSpec.from_dict(LinkSpec(loss=0.1, seed=3).to_dict()) == LinkSpec(loss=0.1, seed=3)




@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("field", ["loss", "delay_ms", "jitter_ms", "reorder", "reorder_ms", "duplicate", "rate_mbit"])
def test_inf_and_nan_are_refused_in_every_field(field, value):
    # nan passes every range check (nan < 0 is False): delay_ms=nan once built a link
    with pytest.raises(ValueError, match=f"LinkSpec.{field} must be a finite number, got {value!r}"):
        LinkSpec(**{field: value})


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_cli_up_refuses_inf_and_nan_in_one_line_before_building(value, monkeypatch, capsys):
    def no_commands(*args, **kwargs):
        raise AssertionError(f"ran a command for a link that cannot be: {args}")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(network.subprocess, "run", no_commands)
    monkeypatch.setattr(network.subprocess, "Popen", no_commands)
    assert cli.main(["up", "--delay-ms", value]) == 2
    err = capsys.readouterr().err
    assert err == f"error: LinkSpec.delay_ms must be a finite number, got {value}\n"


@pytest.mark.parametrize("rate_mbit", [0.000001, 0.0009, 100_001, 1e12])
def test_a_rate_tc_cannot_do_is_refused(rate_mbit):
    # 1e-06 once reached tc as "1e-06mbit" (not a rate to tc), 1e12 as a burst tbf calls illegal
    with pytest.raises(ValueError, match=r"rate_mbit must be from 0.001 \(1 kbit/s\) to 100000 \(100 Gbit/s\)"):
        LinkSpec(rate_mbit=rate_mbit)


@pytest.mark.parametrize("backend", ["nft-tun", "netem"])
def test_the_rate_reaches_tc_in_whole_bits_per_second(backend, monkeypatch):
    commands = []
    monkeypatch.setattr(network, "_sh", lambda argv, **kw: commands.append(argv))
    net = EmulatedNetwork(up=LinkSpec(rate_mbit=0.001), down=LinkSpec(rate_mbit=100_000), backend=backend,
                          name="hh-0-test")
    net._build_qdiscs()
    assert [argv[argv.index("rate") + 1] for argv in commands] == ["1000bit", "100000000000bit"]


def test_netem_gets_plain_decimals_even_for_tiny_values(monkeypatch):
    # Python writes these in scientific notation ("1e-05ms", "2e-06%"), which tc does not read.
    commands = []
    monkeypatch.setattr(network, "_sh", lambda argv, **kw: commands.append(argv))
    tiny = LinkSpec(delay_ms=0.01, jitter_ms=1e-5, reorder=2e-8, duplicate=0.2, rate_mbit=0.001)
    usual = LinkSpec(delay_ms=10, jitter_ms=2.5, reorder=0.05)
    net = EmulatedNetwork(up=tiny, down=usual, backend="netem", name="hh-0-test")
    net._build_qdiscs()
    up, down = (argv[argv.index("netem"):] for argv in commands)
    assert up == ["netem", "limit", "100000", "delay", "10us", "0us", "reorder", "0.000002%",
                  "duplicate", "20%", "rate", "1000bit"]
    assert down == ["netem", "limit", "100000", "delay", "10000us", "2500us", "reorder", "5%"]


def test_packet_direction_by_destination():
    server_net = ipaddress.IPv4Network("198.18.2.0/24")
    header = bytearray(20)
    header[0] = 0x45
    header[12:16] = bytes([198, 18, 1, 10])
    header[16:20] = bytes([198, 18, 2, 2])
    assert packet_direction(bytes(header), server_net) == "up"
    header[12:16], header[16:20] = header[16:20], header[12:16]
    assert packet_direction(bytes(header), server_net) == "down"
    assert packet_direction(b"\x60" + bytes(39), server_net) is None     # IPv6: passed through


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(network.os, "geteuid", lambda: 1000)
    with pytest.raises(EmulationError, match=r"need root.*sudo .venv/bin/python -m bench.emulation up"):
        with EmulatedNetwork(LinkSpec(loss=0.1), backend="nft-tun"):
            pass


def test_nft_ruleset_counts_once_per_direction_and_drops_only_with_kernel_loss():
    net = EmulatedNetwork(up=LinkSpec(loss=0.2), down=LinkSpec(), name="hh-0-test")
    rules = net._nft_ruleset()
    assert 'iifname "br0" numgen random mod 1000000 < 200000 counter name up_dropped drop' in rules
    assert "down_dropped drop" not in rules
    net = EmulatedNetwork(LinkSpec(loss=0.2), loss_in="forwarder", name="hh-0-test")
    assert " drop" not in net._nft_ruleset().replace("policy accept", "")


def test_cli_without_root_says_so_and_what_to_run(monkeypatch, capsys):
    # Simulated non-root Linux, in this process: every command that needs root refuses up front,
    # before it runs any command (so nothing half-built can be left behind).
    def no_commands(*args, **kwargs):
        raise AssertionError(f"ran a command without root: {args}")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(network.subprocess, "run", no_commands)
    for argv in (["up", "--loss", "0.1", "--delay-ms", "20"], ["status"], ["down", "hh-1-abcd"], ["cleanup"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "need root" in err
        assert "run instead: sudo " in err and "-m bench.emulation " + " ".join(argv) in err
    assert cli.main(["check"]) == 1 and "need root" in capsys.readouterr().out


# These read /proc and run `ip netns list` (no root needed), as status and cleanup do.
linux_with_ip = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ip") is None,
                                   reason="needs Linux /proc and the ip command (iproute2)")

# A stand-in for a run's forwarder: what matters to status is its command line (bench.emulation.forwarder
# --tag <run>) and that SIGUSR1 makes it write forwarder.json.
FAKE_FORWARDER = """
import json, signal, sys, time
signal.signal(signal.SIGUSR1, lambda *a: open(sys.argv[1] + "/forwarder.json", "w").write(json.dumps({"up": {"seen": 7}})))
print("ready", flush=True)
time.sleep(30)
"""


@linux_with_ip
def test_forwarder_counters_never_signal_a_pid_that_is_not_that_runs_forwarder(tmp_path):
    state = tmp_path / "hh-1-test"
    state.mkdir()
    (state / "forwarder.json").write_text('{"up": {"seen": 3}}')       # what it wrote before it died
    # The recorded forwarder is gone and its pid now belongs to something else: SIGUSR1 would kill it.
    stranger = subprocess.Popen(["sleep", "30"])
    fake = subprocess.Popen([sys.executable, "-c", FAKE_FORWARDER, str(state), "bench.emulation.forwarder",
                             "--tag", "hh-1-test"], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline() == "ready\n"
        assert network.read_forwarder_stats(state, stranger.pid) == {"up": {"seen": 3}}
        time.sleep(0.1)
        assert stranger.poll() is None, "signalled a process that is not the run's forwarder"
        assert not network.is_forwarder_of(fake.pid, "hh-1-tes")   # the whole run name, not a prefix
        assert network.read_forwarder_stats(state, fake.pid) == {"up": {"seen": 7}}   # asked afresh
    finally:
        for proc in (stranger, fake):
            proc.kill()
            proc.wait()


@linux_with_ip
def test_leftover_runs_are_those_whose_creator_is_dead(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "STATE_ROOT", tmp_path)
    monkeypatch.setattr(network, "list_namespaces", lambda: ["hh-0-d00d-r"])
    alive = subprocess.Popen(["sleep", "30"])
    zombie = subprocess.Popen(["true"])       # exits at once; not waited for, so it stays a zombie
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        runs = {f"hh-{alive.pid}-a11e": {"detached": False}, f"hh-{zombie.pid}-2b1e": {"detached": False},
                f"hh-{dead.pid}-dead": {"detached": False},
                "hh-0-d00d": {"detached": True, "router_ns": "hh-0-d00d-r"},     # `up`'s, working
                "hh-0-9011": {"detached": True, "router_ns": "hh-0-9011-r"}}     # `up`'s, router gone
        for name, meta in runs.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / "meta.json").write_text(json.dumps(meta))
        # a SIGKILLed bench is a zombie until its parent reaps it: dead all the same
        assert network.leftover_runs() == sorted([f"hh-{zombie.pid}-2b1e", f"hh-{dead.pid}-dead", "hh-0-9011"])
        assert network.leftover_runs(f"hh-{alive.pid}-") == []
    finally:
        for proc in (alive, zombie):
            proc.kill()
            proc.wait()
