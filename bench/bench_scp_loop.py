"""pynetdicom's polling loops vs the node's event-driven associations (node/fastassoc.py).

Run: ``.venv/bin/python bench/bench_scp_loop.py [--slices 300] [--size 512] [--repeat 3]
[--idle-seconds 5]``

In this process, a pynetdicom storage SCP whose C-STORE handler does nothing, once with
pynetdicom's own request handler (polling: 1 ms sleeps) and once with
:class:`node.fastassoc.EventDrivenRequestHandler`, each:

1. receives the same synthetic CT series from DCMTK ``storescu`` (TCP_NODELAY=1, one association):
   images/s, best of ``--repeat``, and the ratio;
2. holds one association open and idle for ``--idle-seconds``: the CPU time this process used
   meanwhile (all threads), as a percentage of one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import free_port, make_series, storescu  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer  # noqa: E402

from node.fastassoc import EventDrivenRequestHandler  # noqa: E402

VERIFICATION = "1.2.840.10008.1.1"
KINDS: dict[str, type[RequestHandler]] = {
    "pynetdicom polling": RequestHandler,
    "event-driven": EventDrivenRequestHandler,
}


def start(handler: type[RequestHandler]) -> tuple[ThreadedAssociationServer, int]:
    ae = AE("NOOP")
    ae.maximum_pdu_size = 1 << 20
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_supported_context(VERIFICATION)
    port = free_port()
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
        server_class=ThreadedAssociationServer,
        request_handler=handler,
    )
    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def rate(handler: type[RequestHandler], series: Path, images: int) -> float:
    server, port = start(handler)
    try:
        return images / storescu(port, "NOOP", [series])
    finally:
        server.shutdown()


IDLE_PEER = """
import sys, time
from pynetdicom import AE
ae = AE("IDLE")
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="NOOP")
print("associated" if assoc.is_established else "refused", flush=True)
sys.stdin.read()
assoc.release()
"""


def idle_cpu(handler: type[RequestHandler], seconds: float) -> float:
    """Percent of one core this process (the SCP only; the peer is another process) uses while
    one association is open and idle."""
    server, port = start(handler)
    peer = subprocess.Popen(
        [sys.executable, "-c", IDLE_PEER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == "associated"
        time.sleep(0.5)  # let both sides settle
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        used = time.process_time() - cpu
        return 100.0 * used / (time.perf_counter() - wall)
    finally:
        peer.communicate("", timeout=30)
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="bench-scp-loop-") as tmp:
        series = Path(tmp) / "series"
        images = len(make_series(series, args.slices, args.size))
        print(f"no-op C-STORE handler, {images} images {args.size}x{args.size}, 1 association:")
        rates: dict[str, float] = {}
        for name, handler in KINDS.items():
            rates[name] = max(rate(handler, series, images) for _ in range(args.repeat))
            print(f"  {name:<20} {rates[name]:8.1f} images/s (best of {args.repeat})")
        ratio = rates["event-driven"] / rates["pynetdicom polling"]
        print(f"  ratio event-driven/polling: {ratio:.2f}")
    print(f"one idle open association, {args.idle_seconds:g} s, CPU of this process:")
    for name, handler in KINDS.items():
        print(f"  {name:<20} {idle_cpu(handler, args.idle_seconds):6.2f} % of one core")


if __name__ == "__main__":
    main()
