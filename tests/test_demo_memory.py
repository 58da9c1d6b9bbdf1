"""The demo hands freed heap memory back after each request (demo/memory.py, issue 11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from explainzoo.demo import memory
from explainzoo.demo.policy import Limits, request_scoped

glibc_only = pytest.mark.skipif(memory.glibc() is None, reason="malloc_trim / mallopt are glibc's")


@glibc_only
def test_release_memory_returns_fragmented_free_heap_to_the_system():
    # 300 x 1 MiB blocks in the heap (not mmapped); every other one is freed,
    # leaving holes between live blocks that glibc keeps, as a server keeps
    # the peak of its heaviest request. Only malloc_trim returns them.
    code = textwrap.dedent(
        """
        import ctypes
        from explainzoo.demo.memory import glibc, release_memory

        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        libc = glibc()
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        assert libc.mallopt(-3, 16 * 2**20)  # M_MMAP_THRESHOLD: 1 MiB blocks come from the heap
        assert libc.mallopt(-1, 128 * 2**20)  # M_TRIM_THRESHOLD: no trimming on free
        blocks = [libc.malloc(2**20) for _ in range(300)]
        for p in blocks:
            ctypes.memset(p, 1, 2**20)
        for p in blocks[::2]:
            libc.free(p)
        before = rss()
        assert release_memory() is True
        print(before, rss())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 100, (before, after)  # of the 150 MiB in holes


@glibc_only
def test_limit_arenas_leaves_an_operators_setting_alone():
    assert memory.limit_arenas(2, environ={"MALLOC_ARENA_MAX": "4"}) is False
    assert memory.limit_arenas(2, environ={}) is True


def test_a_request_releases_memory_once_when_the_outer_call_ends(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(memory, "release_memory", lambda: calls.append("trim"))

    class Service:
        limits = Limits()

        @request_scoped
        def inner(self) -> str:
            calls.append("inner")
            return "x"

        @request_scoped
        def outer(self) -> str:
            calls.append("outer")
            return self.inner()

        @request_scoped
        def fails(self) -> None:
            raise ValueError("boom")

    assert Service().outer() == "x"
    assert calls == ["outer", "inner", "trim"]
    with pytest.raises(ValueError, match="boom"):
        Service().fails()
    assert calls[-1] == "trim"  # also after a failed request
