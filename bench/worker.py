"""Client side of one scenario as a separate program, for emulated hosts.

On an emulated link the clients must run inside the client host's network namespace,
so the bench starts `ip netns exec <client ns> python -m bench.worker HOST PORT SCENARIO`
there; it runs the workload against the server and prints the figures as one JSON line.
"""

from __future__ import annotations

import json
import sys

from hellohi import eventloop

from .workloads import RUNNERS, Endpoint, Scenario


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        sys.exit("usage: python -m bench.worker HOST PORT SCENARIO_JSON")
    host, port, config = argv[0], int(argv[1]), json.loads(argv[2])
    sc = Scenario(**config)
    if sc.workload == "kcp-pingpong":
        from .kcp_peer import kcp_udp_pingpong

        figures = eventloop.run(kcp_udp_pingpong(host, port, sc.protocol.removeprefix("kcp-"),
                                               sc.count, sc.payload, sc.warmup, sc.timeout))
    else:
        figures = eventloop.run(RUNNERS[sc.workload](Endpoint(host, port), sc))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
