"""Lab 3, a handout built around the figures of one bench run.

Students get their own numbers, not a textbook's: every figure quoted below is read
from the run's results.json (or is a quotient of two such figures, shown with both
operands). With --rounds a figure is the median of the rounds that measured it, as the
ratios and the throughput chart take it, shown with each round's value (the value the
report's tables list in that round's row). A figure the run did not measure is said to
be not measured, with the bench's reason, instead of being left out or filled in.
"""

from __future__ import annotations

import json
import statistics

from .load import (describe_cpu_idle, describe_link, find, find_all, interrupted, is_measured, latency, link_of, links_used,
                   matching, measured, round_of, stopped_by)
from .tables import number, ratio_detail, ratio_name, ratio_target, ratio_value, retransmitted, verdict


def _us(value) -> str:
    return f"{number(value)} µs"


def _missing(run: dict, workload: str, protocol: str, link: str = "loopback", link_config: dict | None = None) -> str:
    """Why a scenario has no figures: the bench's own reason, or that it was not in the matrix."""
    in_matrix = matching(run["scenarios"], workload, protocol, link, link_config=link_config)
    if in_matrix:
        return f"not measured in this run ({_why_not(run, in_matrix)})"
    if link == "loopback" and find(run, workload, protocol, "remote"):
        return "not measured on loopback in this run (it ran against another computer's server, --server: see part 4)"
    if interrupted(run):
        return f"not measured in this run (not in its scenario matrix, or {stopped_by(run)} stopped the run before it)"
    return "not measured in this run (not in its scenario matrix)"


def _reason(entry: dict) -> str:
    if entry["status"] == "ok":  # ran, but its figures hold no sample (every answer lost, say)
        return "ok, but no sample"
    return f"{entry['status']}: {entry.get('reason') or 'no figures'}"


def _why_not(run: dict, entries: list[dict]) -> str:
    """The bench's reasons for `entries` (scenarios or baselines) measuring nothing. One reason
    when they agree; when they do not (rounds, or payloads, failing differently), each reason,
    with --rounds after the rounds it was given in, rather than the first alone."""
    rounds_by_reason: dict[str, list[int]] = {}
    for entry in entries:
        rounds = rounds_by_reason.setdefault(_reason(entry), [])
        if round_of(entry) not in rounds:
            rounds.append(round_of(entry))
    if len(rounds_by_reason) == 1 or run.get("rounds", 1) == 1:
        return "; ".join(rounds_by_reason)
    return "; ".join(f"{'round' if len(rounds) == 1 else 'rounds'} {_and(rounds)}: {reason}"
                     for reason, rounds in rounds_by_reason.items())


def _by_round(entries: list[dict]) -> dict[int, dict]:
    """The first of `entries` (scenarios or baselines) in each round, by round number."""
    first_of_round: dict[int, dict] = {}
    for entry in entries:
        first_of_round.setdefault(round_of(entry), entry)
    return dict(sorted(first_of_round.items()))


def _median(values: list):
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def _each(values: list, show=number) -> str:
    return ", ".join(show(value) for value in values)


def _rounds_said(run: dict, rounds: list[int], each_round: str, entries: list[dict] = ()) -> str | None:
    """With --rounds, which rounds a median is of, and each round's value (`each_round`); None without.
    `entries`: the figure's scenarios or baselines, measured or not, whose reasons say why the
    other rounds did not measure it."""
    total = run.get("rounds", 1)
    if total == 1:
        return None
    others = [n for n in range(1, total + 1) if n not in rounds]
    if not others:
        return f"median of the {total} rounds: {each_round}"
    without = f"{'round' if len(others) == 1 else 'rounds'} {_and(others)} did not measure it"
    if unmeasured := [entry for entry in entries if round_of(entry) in others]:
        without += f" ({_why_not(run, unmeasured)})"
    if len(rounds) == 1:
        return f"round {rounds[0]} of {total} only, {without}"
    return f"median of rounds {_and(rounds)} of {total}, {without}: {each_round}"


def _rounds_in_brackets(run: dict, rounds: list[int], each_round: str, entries: list[dict] = ()) -> str:
    """_rounds_said in brackets, to follow a median's figure; "" without --rounds."""
    said = _rounds_said(run, rounds, each_round, entries)
    return f" ({said})" if said else ""


def _and(numbers: list[int]) -> str:
    """[1, 2, 3] -> '1, 2 and 3'."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _latency_line(run: dict, workload: str, protocol: str, link: str = "loopback",
                  link_config: dict | None = None) -> str:
    by_round = _by_round([s for s in find_all(run, workload, protocol, link, link_config=link_config) if latency(s)])
    if not by_round:
        return _missing(run, workload, protocol, link, link_config)
    entries = matching(run["scenarios"], workload, protocol, link, link_config=link_config)
    lats = [latency(s) for s in by_round.values()]
    p50s, p99s, counts = [lat["p50"] for lat in lats], [lat.get("p99") for lat in lats], [lat["count"] for lat in lats]
    samples = f"{counts[0]} samples" if len(by_round) == 1 else (
        f"{counts[0]} samples each" if len(set(counts)) == 1 else f"{_each(counts)} samples")
    rounds = _rounds_said(run, list(by_round), f"p50 {_each(p50s)} µs, p99 {_each(p99s)} µs", entries)
    measure = lats[0]["measure"].replace("_", " ")
    return (f"p50 {_us(_median(p50s))}, p99 {_us(_median(p99s))} ({measure}, {samples}"
            + (f"; {rounds})" if rounds else ")"))


def _baseline_entries(run: dict, test: str) -> list[dict]:
    """Every round's entry of a baseline, measured or not."""
    return [entry for entry in run["baselines"] if entry["test"] == test]


def _measured_baseline(run: dict, test: str) -> tuple[dict[int, dict], str]:
    """({round: the baseline's entry}, "") where it measured (one round without --rounds);
    else ({}, why not, in the handout's words)."""
    entries = _baseline_entries(run, test)
    by_round = _by_round([entry for entry in entries if entry["status"] == "ok"])
    if by_round:
        return by_round, ""
    if not entries:
        if interrupted(run):
            return {}, f"not measured in this run (baselines were skipped, or {stopped_by(run)} stopped the run before them)"
        return {}, "not measured in this run (baselines were skipped)"
    return {}, f"not measured in this run ({_why_not(run, entries)})"


def _protocol_work(run: dict, protocol: str) -> str:
    by_round, why_not = _measured_baseline(run, f"protocol-work-{protocol}")
    if not by_round:
        return why_not
    warm = [entry["figures"]["warm"]["p50"] for entry in by_round.values()]
    slept = [entry["figures"]["after_sleep"]["p50"] for entry in by_round.values()]
    rounds = _rounds_in_brackets(run, list(by_round), f"{_each(warm)} and {_each(slept)} µs",
                                 _baseline_entries(run, f"protocol-work-{protocol}"))
    return (f"{_us(_median(warm))} back to back, {_us(_median(slept))} after "
            f"a {next(iter(by_round.values()))['config']['sleep_us']:g} µs sleep{rounds}")


def _baseline_p50s(run: dict, test: str) -> tuple[dict[int, float], str]:
    """({round: the baseline's p50}, its text for the handout), or ({}, why not)."""
    by_round, why_not = _measured_baseline(run, test)
    if not by_round:
        return {}, why_not
    p50s = {n: entry["figures"]["latency"]["p50"] for n, entry in by_round.items()}
    rounds = _rounds_in_brackets(run, list(p50s), f"{_each(list(p50s.values()))} µs", _baseline_entries(run, test))
    return p50s, f"{_us(_median(list(p50s.values())))} round trip{rounds}"


def _quotient(run: dict, numerators: dict[int, float], denominators: dict[int, float], what: str) -> str:
    """numerator ÷ denominator, each round's figures with each other (as the bench's ratios are
    computed), and with --rounds the median of the rounds' quotients (as part 6 gives them)."""
    rounds = [n for n in numerators if denominators.get(n)]
    if not rounds:
        return f"  - {what}: cannot be computed, one of the two figures is not measured"
    quotients = [numerators[n] / denominators[n] for n in rounds]
    worked = [f"{number(numerators[n])} ÷ {number(denominators[n])} = {q:.2f}×" for n, q in zip(rounds, quotients)]
    rounds_said = _rounds_said(run, rounds, "; ".join(worked))
    if rounds_said is None:
        return f"  - {what}: {worked[0]}"
    if len(rounds) == 1:
        return f"  - {what}: {worked[0]} ({rounds_said})"
    return f"  - {what}: {_median(quotients):.2f}× ({rounds_said})"


def _delivery(scenarios: list[dict]) -> str:
    """The loss ledger of `scenarios` (each round's, with --rounds), added up: counts add, unlike percentiles."""
    ledgers = [s["figures"]["delivery"] for s in _by_round(scenarios).values() if s["figures"].get("delivery")]
    if not ledgers:
        return "delivery not measured"
    d = {key: sum(ledger[key] for ledger in ledgers) for key in ("sent", "delivered", "lost", "duplicates", "reordered")}
    together = f" in the {len(ledgers)} rounds together" if len(ledgers) > 1 else ""
    return (f"{d['delivered']} of {d['sent']} delivered, {d['lost']} lost, {d['duplicates']} duplicates, "
            f"{d['reordered']} reordered{together}")


def _p50s(run: dict, workload: str, protocol: str) -> dict[int, float]:
    """{round: p50} of a loopback scenario, for a quotient."""
    return {n: latency(s)["p50"] for n, s in _by_round(find_all(run, workload, protocol)).items() if latency(s)}


def _floor_section(run: dict) -> list[str]:
    tcp_floor, tcp_floor_text = _baseline_p50s(run, "ping-pong-tcp")
    udp_floor, udp_floor_text = _baseline_p50s(run, "ping-pong-udp")
    loop = run.get("environment", {}).get("event_loop", "asyncio")  # runs before hellohi.eventloop existed: asyncio
    # Question (d) measures the other loop into a folder of its own: `make bench` alone writes
    # results/latest, which may be the very run this handout was built from.
    other = "asyncio" if loop == "uvloop" else "uvloop"
    # ...with the same built-in matrix (quick or --full), or most of its scenarios would have
    # nothing to compare with. (A run of a matrix from flags or a file gets the quick one.)
    target = "bench-full" if "--full" in (run.get("command") or []) else "bench"
    return [
        "## 1. The floor: how fast can a round trip be?",
        "",
        f"- sockperf TCP ping-pong, p50: {tcp_floor_text}",
        f"- sockperf UDP ping-pong, p50: {udp_floor_text}",
        f"- Python echo server on the {loop} event loop, no protocol at all (`bench/python_floor.py`), p50: "
        f"TCP {_baseline_p50s(run, 'python-echo-tcp')[1]}; UDP {_baseline_p50s(run, 'python-echo-udp')[1]}",
        "- The least that makes a Hello/HI reliable, in Python: stop-and-wait over UDP (each Hello numbered, its",
        f"  answer is the ack, sent again after silence; `bench/python_floor.py`), p50: {_baseline_p50s(run, 'python-stop-and-wait-udp')[1]}",
        f"- hellohi Hello/HI over TCP (client library): {_latency_line(run, 'hello', 'tcp')}",
        f"- hellohi Hello/HI over TCP (minimal blocking socket, `hello-raw`): {_latency_line(run, 'hello-raw', 'tcp')}",
        f"- hellohi Hello/HI over UDP with acks: {_latency_line(run, 'hello', 'udp')}",
        f"- hellohi Hello/HI over UDP with acks (minimal blocking socket, `hello-raw`): {_latency_line(run, 'hello-raw', 'udp')}",
        f"- hellohi Hello/HI over plain UDP: {_latency_line(run, 'hello', 'udp-raw')}",
        f"- hellohi Hello/HI over plain UDP (minimal blocking socket, `hello-raw`): {_latency_line(run, 'hello-raw', 'udp-raw')}",
        "- The same UDP work with no sockets at all (`bench/protocol_work.py`: client and server joined by function",
        "  calls), p50 per Hello/HI round trip, back to back and after a short sleep before each:",
        f"  with acks {_protocol_work(run, 'udp')}; plain {_protocol_work(run, 'udp-raw')}",
        "- How many times the floor (p50 ÷ p50), from the figures above. sockperf ran pinned (its client on one",
        "  core, its server on the other); the scenarios ran wherever the scheduler put them, sometimes both",
        "  ends on one core, which is far faster (question (f)). So compare with care:",
        _quotient(run, _p50s(run, "hello", "tcp"), tcp_floor, "Hello/HI over TCP ÷ sockperf TCP"),
        _quotient(run, _p50s(run, "hello", "udp"), udp_floor, "Hello/HI over UDP ÷ sockperf UDP"),
        "- The fair comparison, measured in turns (`bench/paired.py`: one second of sockperf, then the Hello/HI",
        "  clients, a few times over, each side's programs on the same cores as sockperf's), median over the turns:",
        _paired_line(run, "tcp"),
        _paired_line(run, "udp"),
        "",
        "**Questions.** (a) sockperf is C and does nothing with the bytes. List what hellohi does between",
        "receiving `HELLO` and sending `HI` (read `tcp/server.py` and `hellohi/relay.py`). Which step would",
        "you expect to cost the most? (b) `hello-raw` and `hello` differ only on the client side. What does",
        "their difference tell you about where the time goes? (c) Compare TCP and UDP here. On loopback",
        "nothing is lost: what does UDP save, and what does our UDP layer add back? (In the turns over UDP",
        "each client ran with acks and plain, seconds apart: subtract their round trips, which part 6 lists",
        "turn by turn in µs.) (d) This run used the",
        f"{loop} event loop. Measure the {other} loop into a folder of its own, so that this run stays as it is:",
        f"`make {target} BENCH_ARGS=\"--loop {other}\" RESULTS=results/{other}`, then `make report RESULTS=results/{other}`.",
        "Compare: which figures move, which stay, and what does that say about where a Python server spends its time?",
        "(e) The no-sockets figures time the protocol code of a `hello-raw` round trip over UDP (both ends,",
        "without the sockets and the event loop), yet sleeping before each round trip makes the same code",
        "slower. What does a CPU lose while its process sleeps? Add the",
        "slept figure to sockperf's round trip and compare with `hello-raw` over UDP as the turns measured it",
        "(part 6 lists each turn's µs, pinned like sockperf): how much of the distance",
        "to sockperf is protocol work, and how much is waking up? Why would sockperf, in C, suffer less from it?",
        "(f) The turns run every client on one core and every server on another. Try sockperf both ways:",
        "`taskset -c 1 sockperf server -i 127.0.0.1 -p 11111` with `taskset -c 0 sockperf ping-pong -i",
        "127.0.0.1 -p 11111 -t 1 -m 64 --full-rtt` (UDP, 64-byte messages as in the bench), then the client on core 1 too. Why is one core faster for a",
        "ping-pong, and why would a fair comparison of two programs pin both the same way?",
        "(g) Stop-and-wait delivers every Hello exactly once and in order too, with far less code. Read",
        "`docs/udp-reliability.md` and list what hellohi's UDP layer does that stop-and-wait does not. Which of",
        "those does a ping-pong of one Hello at a time need? Which does a relay need, where the server sends",
        "messages nobody asked for and many may be in flight at once?",
        *_idle_question(run),
        "",
    ]


def _idle_question(run: dict) -> list[str]:
    idle = describe_cpu_idle(run.get("environment", {}))
    if idle is None:
        return []
    return [
        f"(h) This machine's idle CPUs {idle}. A ping-pong puts each end to sleep once per round trip, so",
        "part of every figure above is waking up, and sockperf pays it as much as Python does. On a KVM guest,",
        "`/sys/module/haltpoll/parameters/guest_halt_poll_ns` says how long an idle CPU keeps polling before it",
        "halts. `docs/bench.md` (\"Idle CPUs\") gives sockperf and the Python echo measured with it at 0 and at",
        "the kernel's default. When wake-ups get cheaper, what happens to the ratios to sockperf, and why? What does",
        "that say about a target written as a ratio to a C program's round trip?",
    ]


def _cores_said(cores: dict | None) -> str:
    return f"clients on core {cores['client']}, servers on core {cores['server']}" if cores else "cores not pinned"


def _paired_line(run: dict, kernel: str) -> str:
    by_round, why_not = _measured_baseline(run, f"paired-hello-{kernel}")
    if not by_round:
        return f"  - over {kernel.upper()}: {why_not}"
    entry = next(iter(by_round.values()))
    # Each round pins the cores this process may use then (bench/cores.py), which may change
    # between rounds (taskset -p, a cpuset): one line names each round's when they differ.
    where_by_round = {n: _cores_said(e["config"].get("cores")) for n, e in by_round.items()}
    if len(set(where_by_round.values())) == 1:
        where = next(iter(where_by_round.values()))
    else:
        where = "; ".join(f"round {n}: {said}" for n, said in where_by_round.items())
    ratios = []
    for name in entry["figures"]["ratio_median"]:
        values = {n: e["figures"]["ratio_median"].get(name) for n, e in by_round.items()}
        values = {n: value for n, value in values.items() if value is not None}
        if values:
            rounds = _rounds_in_brackets(run, list(values), _each(list(values.values()), lambda v: f"{v:.2f}×"),
                                         _baseline_entries(run, f"paired-hello-{kernel}"))
            ratios.append(f"{name} ÷ sockperf = {_median(list(values.values())):.2f}×{rounds}")
    turns = [len(e["figures"]["blocks"]) for e in by_round.values()]
    turns_said = (f"{turns[0]} turns" if len(turns) == 1 else
                  f"{turns[0]} turns per round" if len(set(turns)) == 1 else f"{_each(turns)} turns")
    return f"  - over {kernel.upper()} ({turns_said}, {where}): {'; '.join(ratios)}"


def _relay_section(run: dict) -> list[str]:
    return [
        "## 2. A relay round trip",
        "",
        f"- alice → server → bob → server → alice over TCP: {_latency_line(run, 'relay', 'tcp')}",
        f"- the same over UDP with acks: {_latency_line(run, 'relay', 'udp')}",
        f"- the same over plain UDP: {_latency_line(run, 'relay', 'udp-raw')}",
        "",
        "**Questions.** (a) Why does the bench measure a round trip back to alice instead of alice → bob",
        "one way, when alice and bob may be on different computers? (b) How many network crossings does",
        "one relay round trip make, and how does that compare with the Hello/HI p50 of part 1?",
        "",
    ]


def _throughput_sizes(run: dict, protocol: str, link: str, link_config: dict | None = None) -> str | None:
    """Each payload size's rate, alice → bob; None if no size was measured. With --rounds, the median
    of the rounds that measured the size, as the throughput chart draws it; a size of the matrix that
    no round measured is said to be not measured, never left out."""
    by_payload: dict[int, list[dict]] = {}  # payload -> its scenarios, every round's
    for s in matching(run["scenarios"], "throughput", protocol, link, link_config=link_config):
        by_payload.setdefault(s["config"].get("payload", 0), []).append(s)
    if not any(is_measured(s) for scenarios in by_payload.values() for s in scenarios):
        return None
    parts = []
    for payload in sorted(by_payload):
        by_round = _by_round([s for s in by_payload[payload] if is_measured(s)])
        if not by_round:
            parts.append(f"{payload} B: not measured ({by_payload[payload][0]['status']}; why: report.md, "
                         "\"Scenarios not measured\")")
            continue
        rates = [s["figures"].get("messages_per_s") for s in by_round.values()]
        goodputs = [s["figures"].get("goodput_MB_per_s") for s in by_round.values()]
        rounds = _rounds_in_brackets(run, list(by_round), f"{_each(rates, lambda v: number(v, 0))} msg/s", by_payload[payload])
        parts.append(f"{payload} B: {number(_median(rates), 0)} msg/s, {number(_median(goodputs), 2)} MB/s"
                     f"{_lost_share(list(by_round.values()))}{rounds}")
    return "; ".join(parts)


def _throughput_section(run: dict) -> list[str]:
    lines = ["## 3. How many messages per second?", ""]
    for protocol in ("tcp", "udp", "udp-raw"):
        found = False
        for link, where in (("loopback", "on loopback"), ("remote", "through the server on another computer (`--server`)")):
            if (sizes := _throughput_sizes(run, protocol, link)) is not None:
                found = True
                lines.append(f"- {protocol}, alice → bob {where}: {sizes}")
        if not found:
            lines.append(f"- {protocol}: {_missing(run, 'throughput', protocol)}")
    raw = _by_round(find_all(run, "throughput-raw", "tcp", payload=64))
    if raw:
        rates = [s["figures"].get("messages_per_s") for s in raw.values()]
        rounds = _rounds_in_brackets(run, list(raw), f"{_each(rates, lambda v: number(v, 0))} msg/s",
                                     matching(run["scenarios"], "throughput-raw", "tcp", payload=64))
        lines.append(f"- tcp, 64 B, from two minimal sockets instead of the client library (`throughput-raw`): "
                     f"{number(_median(rates), 0)} msg/s{rounds}")
    iperf, why_not = _measured_baseline(run, "tcp-throughput")
    if iperf:
        goodputs = [entry["figures"]["goodput_MB_per_s"] for entry in iperf.values()]
        rounds = _rounds_in_brackets(run, list(iperf), f"{_each(goodputs, lambda v: number(v, 0))} MB/s",
                                     _baseline_entries(run, "tcp-throughput"))
        lines.append(f"- iperf3, raw TCP bytes on loopback: {number(_median(goodputs), 0)} MB/s{rounds}")
    else:
        lines.append(f"- iperf3: {why_not}")
    lines += [
        "",
        "**Questions.** (a) Over TCP, messages per second falls as the payload grows, while MB/s rises.",
        "Why? What fixed cost does every message pay, whatever its size? Find a line above that does not",
        "follow that pattern at some size, and say why (for plain UDP, mind how many were delivered).",
        "(b) iperf3 moves raw bytes. Name two",
        "things every hellohi message costs that iperf3's bytes do not. (c) `throughput-raw` drives the same",
        "server from two bare sockets. Compare it with tcp at 64 B: which process limits the rate, the",
        "server or the client? (Hint: the bench records the server's CPU seconds for each scenario.)",
        "",
    ]
    return lines


def _lost_share(scenarios: list[dict]) -> str:
    """" (delivered X of Y)" where messages were lost: a rate of what arrived reads faster than it was."""
    ledgers = [s["figures"].get("delivery") or {} for s in scenarios]
    if not any(ledger.get("lost") for ledger in ledgers):
        return ""
    together = " in the rounds together" if len(ledgers) > 1 else ""
    return (f" (delivered {sum(ledger.get('delivered', 0) for ledger in ledgers)} of "
            f"{sum(ledger.get('sent', 0) for ledger in ledgers)}{together})")


def _link_counters(run: dict, link_config: dict) -> str | None:
    """The share of packets the emulated link really dropped, from its own counters (when it has them)."""
    seen = dropped = 0
    for scenario in run["scenarios"]:
        if link_of(scenario["config"]) != "emulated" or scenario["config"].get("link_config") != link_config:
            continue
        for direction in ((scenario.get("link") or {}).get("counters") or {}).values():
            if isinstance(direction, dict) and "nft_seen" in direction and "nft_dropped" in direction:
                seen += direction["nft_seen"]
                # A link brought up with `bench.emulation up --loss-in forwarder` drops in the seeded
                # forwarder instead of nftables (docs/emulation.md); the bench's own links use nftables.
                dropped += direction["nft_dropped"] + direction.get("fwd_dropped", 0)
    if not seen:
        return None
    return f"the link's own counters: {dropped} of {seen} packets dropped ({100 * dropped / seen:.1f} %), both directions, all scenarios"


def _lossy_section(run: dict) -> list[str]:
    lines = ["## 4. When the network loses packets", ""]
    configs = []
    for scenario in run["scenarios"]:
        config = scenario["config"]
        if link_of(config) == "emulated" and config.get("link_config") not in [c.get("link_config") for c in configs]:
            configs.append(config)
    if not configs:
        where = ("it measured a real network instead, below" if any(link_of(s["config"]) == "remote" for s in run["scenarios"])
                 else "`make bench` measures on loopback only")
        lines += [
            f"This run had no emulated link ({where}). As root on Linux,",
            "`--link issue4` adds two emulated hosts joined by a link with 5 % loss and 10 ms delay each way.",
            "Measure it into a folder of its own, so that the run this handout was built from stays as it is:",
            "`make bench BENCH_ARGS=\"--link issue4\" RESULTS=results/lossy` (about 3 minutes), then",
            "`make report RESULTS=results/lossy`.",
            "",
        ]
    for config in configs:
        link, spec = link_of(config), config.get("link_config")
        lines += [f"Link `{describe_link(config)}` (seed {(spec or {}).get('seed', '-')}, configuration "
                  f"`{json.dumps(spec, sort_keys=True)}`):", ""]
        if (counted := _link_counters(run, spec)) is not None:
            lines.append(f"- {counted}")
        # The three of the loopback parts, and any other hellohi protocol the run measured across this link.
        on_link = [s["config"]["protocol"] for s in run["scenarios"] if link_of(s["config"]) == link
                   and s["config"].get("link_config") == spec and not s["config"]["protocol"].startswith("kcp-")]
        protocols = list(dict.fromkeys(["tcp", "udp", "udp-raw", *on_link]))
        for workload, what in (("hello", "Hello/HI round trip"), ("relay", "relay round trip")):
            for protocol in protocols:
                scenarios = find_all(run, workload, protocol, link, link_config=spec)
                title = f"- {LINK_TITLES.get(protocol, protocol)} {what}: "
                if scenarios:
                    lines.append(f"{title}{_delivery(scenarios)}{_resent(scenarios)}; "
                                 f"{_latency_line(run, workload, protocol, link, spec)}")
                else:
                    lines.append(f"{title}{_missing(run, workload, protocol, link, spec)}")
        for protocol in protocols:
            sizes = _throughput_sizes(run, protocol, link, spec)
            lines.append(f"- {LINK_TITLES.get(protocol, protocol)} throughput, alice → bob: "
                         + (sizes if sizes is not None else _missing(run, "throughput", protocol, link, spec)))
        for protocol in ("kcp-normal", "kcp-fast"):
            if find(run, "kcp-pingpong", protocol, link, link_config=spec):
                lines.append(f"- KCP echo ({protocol}): {_latency_line(run, 'kcp-pingpong', protocol, link, spec)}")
        lines.append("")
    lines += _remote_lines(run)
    lines += [
        "**Questions.** (a) With loss p on each crossing, what share of relay round trips should plain UDP",
        "lose (a round trip crosses the link four times), and what share of Hello/HI round trips (twice)?",
        "Do the measured counts match? (b) Compare the",
        "p50 and the p99 of TCP and of UDP with ack/retry: which one is hurt more by a loss, and which",
        "mechanism decides that (the minimum RTO and fast retransmit: their values per preset are in",
        "`hellohi/reliable/config.py` and docs/udp-reliability.md, \"Presets and every knob\"; the code in",
        "`hellohi/reliable/rtt.py` and `hellohi/reliable/endpoint.py`)? (c) Why must a UDP application that sends in bulk have",
        "congestion control (RFC 8085)?",
        "",
    ]
    return lines


# What part 4 calls each protocol.
LINK_TITLES = {"tcp": "TCP", "udp": "UDP with ack/retry", "udp-raw": "plain UDP, no acks",
               "udp-turbo": "UDP with ack/retry, turbo preset"}


def _resent(scenarios: list[dict]) -> str:
    """What was sent again to make up for the link's losses, where it was counted (every round's, added up)."""
    counted = [(s["config"]["protocol"], retransmitted(s)) for s in _by_round(scenarios).values()]
    if not counted or any(count is None for _, count in counted) or counted[0][0] == "udp-raw":
        return ""  # not counted, or plain UDP, which never sends anything again
    total = sum(count for _, count in counted)
    if counted[0][0] == "tcp":
        return f"; the two hosts' kernels sent {total} TCP segments again"
    return f"; the clients' reliability layer sent {total} data packets again (the server's are not counted)"


def _remote_lines(run: dict) -> list[str]:
    """The scenarios measured against a server on another computer (--server), if any."""
    remote = [s for s in measured(run) if link_of(s["config"]) == "remote"]
    if not remote:
        return []
    lines = [f"A real network: against the server at {(remote[0].get('server') or {}).get('remote', '?')} "
             "(`--server`), from this computer:", ""]
    for protocol in dict.fromkeys(s["config"]["protocol"] for s in remote):
        for workload, what in (("hello", "Hello/HI round trip"), ("relay", "relay round trip")):
            scenarios = find_all(run, workload, protocol, "remote")
            if scenarios:
                lines.append(f"- {LINK_TITLES.get(protocol, protocol)} {what}: {_delivery(scenarios)}; "
                             f"{_latency_line(run, workload, protocol, 'remote')}")
    if any(s["config"]["workload"] == "throughput" for s in remote):
        lines.append("- throughput: in part 3")
    return lines + [""]


def _kcp_section(run: dict) -> list[str]:
    lines = ["## 5. KCP's own test, replayed", ""]
    found = False
    for protocol in ("kcp-default", "kcp-normal", "kcp-fast", "udp-turbo", "udp"):
        by_round = _by_round(find_all(run, "kcp-test", protocol))
        if not by_round:
            continue
        scenario = next(iter(by_round.values()))
        if not found and (kcp := scenario["config"].get("kcp_scenario")):
            # The scenario's own parameters, as the bench recorded them.
            lines += [
                "The bench replays the test of KCP's README on a simulated link (virtual clock, so it takes no",
                f"real time): {kcp.get('loss_round_trip_percent')} % loss per round trip, round trip "
                f"{kcp.get('rtt_min_ms')}-{kcp.get('rtt_max_ms')} ms, an echo of {kcp.get('payload')} bytes every "
                f"{kcp.get('send_interval_ms')} ms, {kcp.get('echoes')} echoes, seed {kcp.get('seed')}.",
                "",
            ]
        found = True
        readme = scenario["figures"].get("kcp_readme_avg_max_rtt_ms")
        quoted = f" (KCP's README: {number(readme[0])} / {number(readme[1])} ms)" if readme else ""
        averages = [s["figures"].get("avg_rtt_ms") for s in by_round.values()]
        maxima = [s["figures"].get("max_rtt_ms") for s in by_round.values()]
        rounds = _rounds_in_brackets(run, list(by_round), f"{_each(averages)} and {_each(maxima)} ms",
                                     matching(run["scenarios"], "kcp-test", protocol))
        lines.append(f"- {protocol}: average RTT {number(_median(averages))} ms, maximum {number(_median(maxima))} ms"
                     f"{rounds}{quoted}; {_delivery(list(by_round.values()))}")
    if not found:
        lines.append(f"- {_missing(run, 'kcp-test', 'kcp-fast')}")
    if find(run, "kcp-test", "kcp-default"):
        lines += ["", "The README's default-mode figures do not match what KCP's own test program gives today: "
                      "built now, it averages about 4,100-4,500 ms in default mode (docs/bench.md)."]
    lines += [
        "",
        "**Question.** KCP's fast mode gives up some fairness to the rest of the network for latency.",
        "Which of its settings do that, and which of them does our UDP layer have too?",
        "",
    ]
    return lines


def _targets_section(run: dict) -> list[str]:
    lines = ["## 6. The targets of the project, as measured in this run", ""]
    ratios = run.get("ratios", [])
    if not ratios:
        lines.append("This run's results.json lists no ratios.")
    for ratio in ratios:
        target = ratio_target(ratio)
        target_text = "" if target == "-" else f" (target {target})"
        lines.append(f"- {ratio_name(ratio)}: **{ratio_value(ratio)}**{target_text}, {verdict(ratio)} "
                     f"[{ratio_detail(ratio)}]")
    if not any(ratio.get("met") is not None for ratio in ratios):
        lines += ["", "No target was judged in this run, so this part has no question. Build it from a run that",
                  "measures on loopback with its baselines, into a folder of its own:",
                  "`make bench RESULTS=results/loopback`, then `make report RESULTS=results/loopback`.", ""]
        return lines
    lines += [
        "",
        "**Question.** Pick one target that is not met and one that is. For each, say what in the code or",
        "in the machine decides the figure, and what you would change to move it.",
        "",
    ]
    return lines


def _rounds_note(run: dict) -> list[str]:
    rounds = run.get("rounds", 1)
    if rounds == 1:
        return []
    return [f"This run measured everything {rounds} times (`--rounds {rounds}`). Each figure below is the median of",
            "the rounds that measured it, followed by each round's own value (report.md's tables have a row per round);",
            "delivery counts are the rounds' counts added up. The throughput chart and the ratios in part 6 take",
            f"the median of the {rounds} rounds too. How far apart are the rounds, and what does that say about a",
            "single run on this machine?"]


def handout(run: dict) -> str:
    environment = run["environment"]
    lines = [
        "# Lab 3 — Measuring TCP against UDP",
        "",
        f"Run of {run.get('started_utc') or '(start time not recorded)'} on {environment.get('cpu_count') or '?'} "
        f"cores ({environment.get('cpu_model') or 'unknown CPU'}), kernel {environment.get('kernel') or '?'}, "
        f"Python {environment.get('python') or '?'}. Every figure below is from this run's `results.json`; "
        "the full tables and the charts are in `report.md` beside this file. Latencies are in µs (KCP's",
        "test in ms) and each says whether it is a round trip or one way.",
        f"Links in this run: {links_used(run)}.",
        *_rounds_note(run),
        *(["", f"**{stopped_by(run)} stopped this run**: only what finished before it was measured. Run the bench again "
            "to answer every question."] if interrupted(run) else []),
        "",
        *_floor_section(run),
        *_relay_section(run),
        *_throughput_section(run),
        *_lossy_section(run),
        *_kcp_section(run),
        *_targets_section(run),
        "## 7. Your conclusions",
        "",
        "Write three sentences: when would you choose TCP for a chat relay, when UDP with your own",
        "reliability, and when plain UDP? Quote one figure from this handout for each.",
        "",
    ]
    return "\n".join(lines)
