"""Content addresses of full KV blocks, for prefix caching.

A block's KV depends on its own token ids and on every token before it, so block i's hash
covers its tokens and block i-1's hash (a chain from a root that holds whatever else would
change the KV: nothing yet; a LoRA adapter or multimodal inputs would go there). Two blocks
with equal hashes hold equal KV. BLAKE2b with 128-bit digests: a collision would silently
serve one prompt another's KV, so Python's 64-bit `hash` is not enough.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

DIGEST_BYTES = 16


def root_hash(extra: bytes = b"") -> bytes:
    """The parent of a sequence's first block; `extra` is what else shapes the KV."""
    return hashlib.blake2b(b"fastserve-kv-root" + extra, digest_size=DIGEST_BYTES).digest()


def block_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """The hash of one full block of `token_ids` following the block hashed `parent`."""
    digest = hashlib.blake2b(parent, digest_size=DIGEST_BYTES)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


def extend_block_hashes(
    hashes: list[bytes],
    token_ids: Sequence[int],
    block_size: int,
    num_blocks: int,
    extra: bytes = b"",
) -> None:
    """Grow `hashes` (the chain of `token_ids`' first blocks) to `num_blocks` full blocks,
    as far as `token_ids` fills them; hashes already there are kept."""
    num_blocks = min(num_blocks, len(token_ids) // block_size)
    parent = hashes[-1] if hashes else root_hash(extra)
    for i in range(len(hashes), num_blocks):
        parent = block_hash(parent, token_ids[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
