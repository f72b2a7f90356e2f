"""The spool: UID validation, paths, atomic writes that never leave partial files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from storage.errors import InvalidUIDError, SpoolError
from storage.folderflush import FolderFlushes
from storage.spool import TMP_PREFIX, Spool, validate_uid

REPO = Path(__file__).resolve().parents[2]
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.mark.parametrize(
    "uid",
    ["0", "1.2.840.10008.5.1.4.1.1.2", "1.0.3", "2.25." + "1" * 59, "1." + "9" * 62],
)
def test_valid_uids_pass(uid: str) -> None:
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "..",
        "../1.2",
        "1.2/3",
        "1.2\\3",
        "/1.2",
        "1.2.",
        ".1.2",
        "1..2",
        "01.2",
        "1.02",
        "1.2 ",
        "1.2\x00",
        "1.2.a",
        "1" * 65,
        "1.2." + "3" * 61,
    ],
)
def test_invalid_uids_are_rejected(uid: str) -> None:
    with pytest.raises(InvalidUIDError) as info:
        validate_uid(uid)
    assert info.value.value == uid


def test_non_string_uid_is_rejected() -> None:
    with pytest.raises(InvalidUIDError):
        validate_uid(123)  # type: ignore[arg-type]


def test_instance_path_is_built_from_uids_under_the_root(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    assert path == tmp_path / "spool" / STUDY / SERIES / f"{SOP}.dcm"
    for bad in ("../../etc", "1.2/3", ""):
        with pytest.raises(InvalidUIDError):
            spool.instance_path(STUDY, bad, SOP)
        with pytest.raises(InvalidUIDError):
            spool.instance_path(bad, SERIES, SOP)
        with pytest.raises(InvalidUIDError):
            spool.instance_path(STUDY, SERIES, bad)


def test_write_atomic_writes_the_whole_file_and_no_temporary(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    data = bytes(range(256)) * 4096
    spool.write_atomic(path, data)
    assert path.read_bytes() == data
    spool.write_atomic(path, b"second")  # replaces atomically
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_write_atomic_refuses_paths_outside_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for path in (tmp_path / "elsewhere.dcm", tmp_path / "spool" / ".." / "x.dcm", spool.root):
        with pytest.raises(SpoolError):
            spool.write_atomic(path, b"data")
    assert not (tmp_path / "elsewhere.dcm").exists()
    assert not (tmp_path / "x.dcm").exists()


def test_write_atomic_failure_creating_folders_raises_spool_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / STUDY).write_bytes(b"a file where a folder should be")
    with pytest.raises(SpoolError):
        spool.write_atomic(spool.instance_path(STUDY, SERIES, SOP), b"data")
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [STUDY]


def test_write_fails_midway_on_a_full_disk_and_leaves_nothing(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse writes past 64 KiB (EFBIG), as a full disk would
    # refuse them (ENOSPC): the first chunk is written, a later one fails. Run in a child process
    # so that the limit does not touch the test process.
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from storage.errors import SpoolError
        from storage.spool import Spool
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        spool = Spool(Path({str(tmp_path / "spool")!r}))
        path = spool.instance_path({STUDY!r}, {SERIES!r}, {SOP!r})
        path.parent.mkdir(parents=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            spool.write_atomic(path, b"x" * 1_000_000)
        except SpoolError as exc:
            print("refused:", exc)
            sys.exit(0)
        sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused" in result.stdout
    series_dir = tmp_path / "spool" / STUDY / SERIES
    assert list(series_dir.iterdir()) == []


def test_remove_partials_deletes_leftover_temporaries_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    spool.write_atomic(path, b"kept")
    (path.parent / f"{TMP_PREFIX}abc").write_bytes(b"half")
    assert spool.remove_partials() == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert Spool(tmp_path / "none").remove_partials() == 0


def test_free_bytes_works_before_the_spool_exists(tmp_path: Path) -> None:
    assert Spool(tmp_path / "not" / "yet").free_bytes() > 0


def test_write_atomic_writes_buffers_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    spool.write_atomic(path, (b"meta-", memoryview(b"data set")))
    assert path.read_bytes() == b"meta-data set"


def test_instance_lock_excludes_another_process(tmp_path: Path) -> None:
    # A child process holds the lock of SOP until told to let go; this process's attempt to take
    # it returns only after the child wrote "released" (ordering, not timing).
    held, go, released = (tmp_path / n for n in ("held", "go", "released"))
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from storage.spool import Spool
        spool = Spool(Path({str(tmp_path / "spool")!r}))
        with spool.instance_lock({SOP!r}):
            Path({str(held)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.01)
            Path({str(released)!r}).touch()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        while not held.exists():
            assert child.poll() is None, "the child process ended without taking the lock"
            time.sleep(0.01)
        spool = Spool(tmp_path / "spool")
        seen: list[bool] = []

        def take() -> None:
            with spool.instance_lock(SOP):
                seen.append(released.exists())

        taker = threading.Thread(target=take)
        taker.start()
        taker.join(0.5)
        assert taker.is_alive()  # waiting for the child's lock
        go.touch()
        taker.join(30)
        assert seen == [True]
        assert child.wait(30) == 0
        spool.close()
    finally:
        child.kill()
        child.wait()


class _FailingFlushSpool(Spool):
    def _sync_folder(self, folder: Path) -> None:
        raise OSError(5, "Input/output error")


def test_a_failed_folder_flush_removes_the_file_after_the_work(tmp_path: Path) -> None:
    # The name of a file whose folder flush failed may not be on disk: the file goes, so that a
    # re-sent copy is written and flushed again instead of being found and passed for kept.
    spool = _FailingFlushSpool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    seen: list[bool] = []
    with pytest.raises(SpoolError, match="flush"):
        spool.write_atomic_while(path, b"data", lambda: seen.append(path.exists()))
    assert seen == [True]  # the work ran with the file under its name
    assert not path.exists()
    with pytest.raises(SpoolError):
        spool.write_atomic(path, b"data")
    assert list(path.parent.iterdir()) == []
    spool.close()


def test_folder_flushes_are_shared_and_errors_reach_every_waiter(tmp_path: Path) -> None:
    # While one flush of a folder runs, every writer that asks joins the next one: one more fsync
    # for all of them. A flush that fails fails all who waited for it.
    started, release = threading.Event(), threading.Event()
    calls: list[Path] = []

    def sync(folder: Path) -> None:
        calls.append(folder)
        if len(calls) == 1:
            started.set()
            release.wait(10)
        elif len(calls) == 2:
            raise OSError(5, "Input/output error")

    flushes = FolderFlushes(sync)
    errors: list[OSError | None] = []

    def flush() -> None:
        try:
            flushes.flush(tmp_path)
            errors.append(None)
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=flush)
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=flush) for _ in range(5)]
    for thread in others:
        thread.start()
    while flushes.requests < 6:
        time.sleep(0.01)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert len(calls) == 2 and flushes.flushes == 2
    assert errors.count(None) == 1 and len(errors) == 6  # the first flush's writer only


def test_a_flush_that_started_after_the_mark_covers_it(tmp_path: Path) -> None:
    # A writer that renamed (took its mark) before the running flush started is served by that
    # flush; one that renamed after it started needs the next.
    started = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    calls: list[Path] = []

    def sync(folder: Path) -> None:
        calls.append(folder)
        started[len(calls) - 1].set()
        release[len(calls) - 1].wait(60)

    flushes = FolderFlushes(sync)
    before = flushes.mark()
    first = threading.Thread(target=flushes.flush, args=(tmp_path,))
    first.start()
    assert started[0].wait(10)
    after = flushes.mark()
    covered = threading.Thread(target=flushes.flush, args=(tmp_path, before))
    uncovered = threading.Thread(target=flushes.flush, args=(tmp_path, after))
    covered.start()
    uncovered.start()
    while flushes.requests < 3:
        time.sleep(0.01)
    release[0].set()
    assert started[1].wait(10)  # the second flush runs, for `uncovered`
    first.join(10)
    covered.join(10)  # returns long before the second flush is released
    assert not covered.is_alive() and uncovered.is_alive()
    release[1].set()
    uncovered.join(10)
    assert len(calls) == 2
