"""Asynchronous block copies between the device pool and the host pool.

On CUDA the copies run on a dedicated stream (non-blocking DMA from/to pinned memory) and
a handle polls a CUDA event; on CPU they run on one background thread, whose FIFO order
keeps an offload of a block ahead of a later upload into the same block id.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

import torch

from fastserve.runtime.kv.pools import DeviceKVPool, HostKVPool


def coalesce_runs(src: Sequence[int], dst: Sequence[int]) -> list[tuple[int, int, int]]:
    """(src_start, dst_start, length) runs where both id lists advance by one together."""
    if len(src) != len(dst):
        raise ValueError(f"block copy lists differ in length: {len(src)} vs {len(dst)}")
    runs: list[tuple[int, int, int]] = []
    for s, d in zip(src, dst, strict=True):
        if runs and runs[-1][0] + runs[-1][2] == s and runs[-1][1] + runs[-1][2] == d:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((s, d, 1))
    return runs


def _copy_runs(dst: torch.Tensor, src: torch.Tensor, runs: list[tuple[int, int, int]], nb: bool):
    for s, d, n in runs:
        dst[d : d + n].copy_(src[s : s + n], non_blocking=nb)


class SwapHandle:
    """A started copy: `done()` polls, `wait()` blocks until the blocks are in place."""

    def __init__(
        self,
        direction: str,
        dst_block_ids: list[int],
        future: concurrent.futures.Future | None = None,
        event: torch.cuda.Event | None = None,
    ):
        self.direction = direction  # "offload" (device -> host) or "upload" (host -> device)
        self.dst_block_ids = dst_block_ids
        self._future = future
        self._event = event

    def done(self) -> bool:
        if self._future is not None:
            if self._future.done():
                self._future.result()  # re-raise a failed copy here, not silently
                return True
            return False
        return self._event is None or self._event.query()

    def wait(self) -> None:
        if self._future is not None:
            self._future.result()
        elif self._event is not None:
            self._event.synchronize()


class BlockSwapper:
    """Moves blocks between `device` and `host` pools without blocking the caller."""

    def __init__(self, device_pool: DeviceKVPool, host_pool: HostKVPool):
        if device_pool.spec != host_pool.spec:
            raise ValueError("device and host pools must share one KV spec")
        self.device_pool = device_pool
        self.host_pool = host_pool
        self.on_cuda = device_pool.device.type == "cuda"
        self._stream = torch.cuda.Stream(device_pool.device) if self.on_cuda else None
        self._executor = (
            None
            if self.on_cuda
            else concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kv-swap")
        )
        self._pending_uploads: list[SwapHandle] = []

    def offload(self, device_block_ids: Sequence[int], host_block_ids: Sequence[int]) -> SwapHandle:
        """Start copying device blocks to host blocks."""
        self._check(device_block_ids, self.device_pool.num_blocks, "device")
        self._check(host_block_ids, self.host_pool.num_blocks, "host")
        runs = coalesce_runs(device_block_ids, host_block_ids)
        return self._start(
            "offload", self.host_pool.storage, self.device_pool.storage, runs, list(host_block_ids)
        )

    def upload(self, host_block_ids: Sequence[int], device_block_ids: Sequence[int]) -> SwapHandle:
        """Start copying host blocks to device blocks."""
        self._check(host_block_ids, self.host_pool.num_blocks, "host")
        self._check(device_block_ids, self.device_pool.num_blocks, "device")
        runs = coalesce_runs(host_block_ids, device_block_ids)
        handle = self._start(
            "upload", self.device_pool.storage, self.host_pool.storage, runs, list(device_block_ids)
        )
        self._pending_uploads.append(handle)
        return handle

    def has_pending_uploads(self) -> bool:
        return bool(self._pending_uploads)

    def fence_uploads(self, device_block_ids: set[int] | None = None) -> None:
        """Make compute that follows see finished uploads (of these blocks, or all)."""
        still: list[SwapHandle] = []
        for handle in self._pending_uploads:
            if handle.done():
                continue
            if device_block_ids is not None and device_block_ids.isdisjoint(handle.dst_block_ids):
                still.append(handle)
                continue
            if self.on_cuda:
                # GPU-side wait: the compute stream orders after the copy, the host goes on.
                torch.cuda.current_stream(self.device_pool.device).wait_event(handle._event)
            else:
                handle.wait()
        self._pending_uploads = still

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _start(
        self,
        direction: str,
        dst: torch.Tensor,
        src: torch.Tensor,
        runs: list[tuple[int, int, int]],
        dst_ids: list[int],
    ) -> SwapHandle:
        if not runs:
            return SwapHandle(direction, dst_ids)
        if self.on_cuda:
            assert self._stream is not None
            # Order after every kernel already queued on the compute stream: they may still
            # be writing the blocks we read, or reading the blocks we overwrite.
            self._stream.wait_stream(torch.cuda.current_stream(self.device_pool.device))
            with torch.cuda.stream(self._stream):
                _copy_runs(dst, src, runs, nb=True)
                event = torch.cuda.Event()
                event.record(self._stream)
            return SwapHandle(direction, dst_ids, event=event)
        assert self._executor is not None
        future = self._executor.submit(_copy_runs, dst, src, runs, False)
        return SwapHandle(direction, dst_ids, future=future)

    @staticmethod
    def _check(ids: Sequence[int], limit: int, pool: str) -> None:
        bad = [i for i in ids if not 0 <= i < limit]
        if bad:
            raise IndexError(f"{pool} block ids out of range [0, {limit}): {bad[:8]}")
