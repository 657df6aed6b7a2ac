"""Saved arrays are read one reader at a time (CPython 3.11's AST race, see bertbuild.arrays)."""

import threading

import numpy as np

from bertbuild.arrays import HEADER_PARSE_LOCK, load_npz


def test_load_npz_returns_every_array_in_memory(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, start=np.arange(6.0).reshape(2, 3), mask=np.array([True, False]))
    arrays = load_npz(path)
    assert sorted(arrays) == ["mask", "start"]
    path.unlink()  # nothing still reads the file
    assert arrays["start"][1, 2] == 5.0 and arrays["mask"].tolist() == [True, False]


def test_a_read_waits_while_another_holds_the_header_lock(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.ones(3))
    done = threading.Event()
    reader = threading.Thread(target=lambda: (load_npz(path), done.set()))
    with HEADER_PARSE_LOCK:
        reader.start()
        assert not done.wait(0.3)  # blocked: no header is parsed while the lock is held elsewhere
    reader.join(10)
    assert done.is_set()
