"""Stopping ``serve`` and its workers: the signal relay, and no helper process outliving its owner.

Each case runs its process in a child Python (``python -c``), so that a hang fails the test after
a bound instead of hanging the suite, and so that stopping the multiprocessing helpers does not
touch the test process's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from node.settings import Settings
from node.stopsignal import SignalRelay
from tests.conftest import REPO_ROOT
from tests.node.dicomnet import wait_for
from tests.node.test_serve_e2e import alive, command_line, descendants

#: A child that does not finish in this time has hung (it needs well under a second).
HANG_S = 60


def _python(code: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPINENODE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=environ | {"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )


def test_a_signal_while_the_main_thread_holds_the_events_lock_does_not_hang() -> None:
    # Event.wait holds the event's condition lock for a few bytecodes on each pass; a handler
    # that called Event.set() there waited for its own thread for ever.
    done = _python(
        """
        import os, signal, threading
        from node.stopsignal import SignalRelay
        stop = threading.Event()
        with SignalRelay(stop) as relay:
            with stop._cond:  # where Event.wait is between two passes
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs right after this call
                busy = sum(range(1000))
            assert stop.wait(30), "the relay did not set the event"
        assert relay.received is signal.SIGTERM
        print("stopped")
        """
    )
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


def test_the_relay_restores_the_previous_handlers_and_calls_back_in_the_main_thread() -> None:
    stop = threading.Event()
    seen: list[tuple[signal.Signals, str]] = []

    def back(received: signal.Signals) -> None:
        seen.append((received, threading.current_thread().name))

    before = signal.getsignal(signal.SIGINT)
    with SignalRelay(stop, signals=(signal.SIGINT,), on_signal=back):
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(30)
    assert signal.getsignal(signal.SIGINT) is before
    assert seen == [(signal.SIGINT, threading.main_thread().name)]


def test_stop_fork_server_waits_for_it() -> None:
    done = _python(
        """
        import os
        from multiprocessing import forkserver
        from node.isolation import prepare
        from node.worker import stop_fork_server
        prepare([])
        pid = forkserver._forkserver._forkserver_pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        stop_fork_server()
        assert not os.path.exists(f"/proc/{pid}"), "the fork server still runs (or is unreaped)"
        print("stopped")
        """
    )
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


def test_stop_resource_tracker_waits_for_it() -> None:
    done = _python(
        """
        import multiprocessing, os, time
        from multiprocessing import resource_tracker
        from node.service import stop_resource_tracker
        child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
        child.start()  # spawn starts the tracker
        child.join()
        pid = resource_tracker._resource_tracker._pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        stop_resource_tracker()
        assert not os.path.exists(f"/proc/{pid}"), "the tracker still runs (or is unreaped)"
        print("stopped")
        """
    )
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


def test_a_worker_stopped_by_sigterm_has_stopped_its_fork_server(tmp_path: Path) -> None:
    import multiprocessing

    from node.worker import worker_main

    settings = Settings(data_dir=tmp_path / "var", analyzer="tests.node.analyzers:noop")
    for folder in (settings.data_dir, settings.spool_dir, settings.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    process = multiprocessing.get_context("spawn").Process(
        target=worker_main, args=(settings, 0, 1, os.getpid())
    )
    process.start()
    assert process.pid is not None
    try:
        assert wait_for(lambda: descendants(process.pid or 0) != [], timeout=HANG_S)
        helpers = descendants(process.pid)  # the fork server
        process.terminate()
        process.join(HANG_S)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    assert [command_line(pid) for pid in helpers if alive(pid)] == []


def test_a_receiver_stops_on_sigterm_through_the_relay_and_ignores_sigint(tmp_path: Path) -> None:
    # node/receiver.py's handler used to set its stop event itself; the relay's thread sets it
    # now (and logs which signal it was), so no handler ever calls Event.set().
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    code = f"""
        import socket
        from pathlib import Path
        from node.receiver import receiver_main
        from node.settings import Settings
        settings = Settings(data_dir=Path({str(tmp_path / "var")!r}), min_free_mb=0)
        settings.spool_dir.mkdir(parents=True)
        channel = socket.socket(fileno={theirs.fileno()})
        receiver_main(settings, 0, 1, channel, ("127.0.0.1", 0))
        print("returned")
        """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPINENODE_")}
    with ours:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO_ROOT,
            env=environ | {"PYTHONPATH": str(REPO_ROOT)},
            pass_fds=[theirs.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        theirs.close()
        try:
            ours.settimeout(HANG_S)
            assert ours.recv(64) == b"R"  # ready: its handlers are installed
            process.send_signal(signal.SIGINT)  # ignored: the serving process stops receivers
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=HANG_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert (process.returncode, out.strip()) == (0, "returned"), err
    assert "node.stopsignal: SIGTERM received; stopping" in err
    assert "SIGINT" not in err and "KeyboardInterrupt" not in err
    assert "receiver 0 stopped: 0 receipt transactions" in err
