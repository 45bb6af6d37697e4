"""Emulated hosts joined by an impaired link (Linux network namespaces; needs root).

Public API::

    from bench.emulation import LinkSpec, EmulatedNetwork, EmulationError

    spec = LinkSpec(loss=0.05, delay_ms=10, jitter_ms=0, reorder=0.0, duplicate=0.0, rate_mbit=None, seed=1)
    with EmulatedNetwork(spec, clients=1, backend="auto") as net:
        net.server_ns, net.client_ns[0], net.server_addr, net.client_addrs[0]
        proc = net.popen(net.server_ns, argv, **popen_kwargs)   # subprocess.Popen, stopped on exit
        done = net.run(net.client_ns[0], argv)                  # subprocess.CompletedProcess
        net.counters()   # {"up": {...}, "down": {...}}: nft_seen/nft_dropped, fwd_seen/fwd_dropped,
                         #  forwarded/duplicated/reordered

See docs/emulation.md, :mod:`bench.emulation.network` (topology, backends, cleanup),
:mod:`bench.emulation.forwarder` (the TUN forwarder) and :mod:`bench.emulation.impair` (its
seeded decisions).  Command line: ``python -m bench.emulation {up,status,down,cleanup,check}``.
"""

from .impair import Fate, Impairer
from .network import (EmulatedNetwork, EmulationError, check_environment, cleanup, find_leftovers,
                      leftover_runs, netem_available)
from .spec import LinkSpec

__all__ = ["LinkSpec", "EmulatedNetwork", "EmulationError", "Impairer", "Fate", "check_environment",
           "cleanup", "find_leftovers", "leftover_runs", "netem_available"]
