"""Hello/HI and sockperf's ping-pong measured in turns, so the machine's drift cannot skew their ratio.

The Hello/HI target of issue 4 divides hellohi's round trip by sockperf's,
both measured in the same run. On a shared machine "the same run" is not
enough: its speed drifts from one minute to the next (sockperf's p50 here has
read 54 us in one run and 70 us in the next), and a plain bench run measures
sockperf first and the Hello/HI scenarios half a minute later. Their ratio then
measures the drift as much as hellohi.

So this measures them in turns, against one hellohi server and one sockperf
server started once: a one-second sockperf ping-pong, then a thousand
Hello/HI round trips through each client (the library, then `hello-raw`; over
UDP each with acks and plain), and again, `blocks` times. Each block gives
ratios of figures taken within a few seconds of each other; the figure for
the target is their median over the blocks.

Both pairs of programs also run on the same cores: every server on one core,
every client on another, where the machine has two (bench/cores.py says why).
Unpinned, `hello-raw` over TCP read 27 us in one block and 73 us in the next,
against sockperf's 53-61.

It runs with the other baselines in every bench run (`--no-baselines` skips it).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from hellohi import eventloop
from hellohi.launcher import start_server

from . import baselines
from .cores import Pinning, on_core, pinning, running_on
from .runner import SERVER_ARGS
from .workloads import RUNNERS, Endpoint, Scenario

BLOCKS = 5  # each takes about 3.5 s, most of it sockperf's own warm-up and exit
ROUND_TRIPS = 1000  # per client and block: a tenth of a second or so beside sockperf's second
SOCKPERF_SECONDS = 1  # sockperf's shortest run

# kernel protocol -> the (workload, hellohi protocol) pairs measured beside its sockperf
CLIENTS = {
    "tcp": (("hello", "tcp"), ("hello-raw", "tcp")),
    # Over UDP the library runs over plain UDP too: the library's two figures, taken in
    # the same turns, show what the reliability layer adds to a round trip.
    "udp": (("hello", "udp"), ("hello", "udp-raw"), ("hello-raw", "udp"), ("hello-raw", "udp-raw")),
}


def client_label(workload: str, protocol: str) -> str:
    return f"{workload} {protocol}"


def clients_of(kernel: str, protocols=None) -> list[tuple[str, str]]:
    """The (workload, protocol) pairs measured beside `kernel`'s sockperf: all of them, or
    those whose protocol is among `protocols` (a run's --protocols)."""
    return [pair for pair in CLIENTS[kernel] if protocols is None or pair[1] in protocols]


def not_among_the_runs(protocols: list[str]) -> str:
    """Why a baseline that runs hellohi's code over `protocols` was left out of a run."""
    return f"{' and '.join(protocols)} {'is' if len(protocols) == 1 else 'are'} not among this run's protocols"


def measure(kernel: str, blocks: int = BLOCKS, round_trips: int = ROUND_TRIPS,
            host: str = "127.0.0.1", protocols=None) -> dict:
    """Hello/HI beside sockperf over `kernel` (tcp or udp), in turns, as a baseline result.
    `protocols`: measure only the clients of these hellohi protocols (default: every client);
    the entry's config names each client left out, with the reason, and with none left to
    measure the entry is "skipped"."""
    clients = clients_of(kernel, protocols)
    left_out = {client_label(*pair): not_among_the_runs([pair[1]]) for pair in CLIENTS[kernel] if pair not in clients}
    pin = pinning()
    result = {"tool": "hellohi-paired", "test": f"paired-hello-{kernel}",
              "config": {"protocol": kernel, "blocks": blocks, "round_trips": round_trips,
                         "sockperf_seconds": SOCKPERF_SECONDS, "host": host,
                         "cores": pin.config,
                         "clients": [client_label(*pair) for pair in clients], "left_out": left_out,
                         "python": sys.version.split()[0], "event_loop": eventloop.resolve()}}
    if not clients:
        every_protocol = list(dict.fromkeys(protocol for _, protocol in CLIENTS[kernel]))
        return {**result, "status": "skipped", "reason": not_among_the_runs(every_protocol)}
    if shutil.which("sockperf") is None:
        return {**result, "status": "missing", "reason": "sockperf not installed; " + baselines.INSTALL_HINT["sockperf"]}
    try:
        rows = _blocks(kernel, clients, blocks, round_trips, host, pin)
    except Exception as error:  # a baseline that fails is reported; the run goes on
        return {**result, "status": "error", "reason": f"{type(error).__name__}: {error}"}
    ratios = {}
    for label in result["config"]["clients"]:
        per_block = [row[label] / row["sockperf"] for row in rows if row[label] and row["sockperf"]]
        ratios[label] = statistics.median(per_block) if per_block else None
    return {**result, "status": "ok", "figures": {"blocks": rows, "ratio_median": ratios}}


def _blocks(kernel: str, clients: list[tuple[str, str]], blocks: int, round_trips: int, host: str,
            pin: Pinning) -> list[dict]:
    """[{"sockperf": p50, "<workload> <protocol>": p50, ...} for each block], in microseconds."""
    on_client_core, on_server_core = on_core(pin.client), on_core(pin.server)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hellohi-paired-") as tmp, \
            baselines.sockperf_server(kernel, host, on_server_core) as sockperf_port, \
            open(Path(tmp) / "server.log", "w") as log, \
            running_on(pin.client):
        server = start_server(kernel, ["--store", str(Path(tmp) / "store.sqlite3"), *SERVER_ARGS],
                              host=host, stderr=log, command_prefix=on_server_core)
        try:
            endpoint = Endpoint(server.host, server.port)
            for _ in range(blocks):
                _, latency, output = baselines.sockperf_client(kernel, sockperf_port, SOCKPERF_SECONDS, host=host,
                                                               command_prefix=on_client_core)
                if latency["p50"] is None:
                    raise RuntimeError(f"sockperf measured nothing: {output[-300:]}")
                row = {"sockperf": latency["p50"]}
                for workload, protocol in clients:
                    sc = Scenario(workload, protocol, count=round_trips)
                    figures = eventloop.run(RUNNERS[workload](endpoint, sc))
                    row[client_label(workload, protocol)] = figures["latency"]["p50"]
                rows.append(row)
        finally:
            server.stop()
    return rows
