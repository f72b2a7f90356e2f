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
    def sync_folder(self, folder: Path) -> None:
        raise OSError(5, "Input/output error")


def test_a_failed_folder_fsync_raises_and_leaves_no_file(tmp_path: Path) -> None:
    # The folder fsync is the last step of the write: when it fails, the write is refused (the
    # store answers a failure and records nothing), no temporary file is left, and the renamed
    # file goes too: its name may not be on disk, so a re-send must write and flush it again
    # rather than find it and record it.
    spool = _FailingFlushSpool(tmp_path / "spool")
    path = spool.instance_path(STUDY, SERIES, SOP)
    with pytest.raises(SpoolError, match="Input/output error"):
        spool.write_atomic(path, b"data")
    assert list(path.parent.iterdir()) == []
    spool.close()
