"""Linear: every weight layout computes F.linear's result."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastserve.runtime.model.linear import Linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_f_linear(dtype, rows, threads, bias):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=gen).to(dtype)
    b = torch.randn(48, generator=gen).to(dtype) if bias else None
    x = torch.randn(rows, 32, generator=gen).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = Linear(w, b)(x)
    finally:
        torch.set_num_threads(before)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got.float(), F.linear(x, w, b).float(), atol=tol, rtol=tol)


def test_unpacked_fallback():
    w = torch.randn(8, 4)
    lin = Linear(w, pack=False)
    assert not lin.packed and lin.weight is w
    x = torch.randn(3, 4)
    torch.testing.assert_close(lin(x), F.linear(x, w))
