"""pick_batch: the pure batch builder shared by the simulator (and meant for the core)."""

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.batching import is_prefilling, pick_batch
from fastserve.runtime.sched.job import Job, KVLocation

BS = 4  # tokens per block


def job(rid: str, prompt: int, computed: int = 0, outputs: int = 0, where=None) -> Job:
    j = Job(rid, [0] * prompt, SamplingParams(), 0.0)
    j.output_ids = [0] * outputs
    j.num_computed = computed
    if computed:
        j.location = where or KVLocation.DEVICE
        j.block_ids = list(range(-(-computed // BS)))
    return j


def pick(order, jobs=8, tokens=64, blocks=100, **kw):
    entries = pick_batch(
        order, max_jobs=jobs, max_tokens=tokens, free_blocks=blocks, block_size=BS, **kw
    )
    return [(e.job.request_id, e.num_new_tokens, e.is_prefill, e.new_blocks) for e in entries]


def test_prefill_and_decode_entries() -> None:
    new = job("new", 10)
    dec = job("dec", 10, computed=10, outputs=1)  # 12 blocks? no: 10 tokens -> 3 blocks
    assert is_prefilling(new) and not is_prefilling(dec)
    # dec feeds its sampled token: 11 tokens need 3 blocks, it holds 3.
    assert pick([new, dec]) == [("new", 10, True, 3), ("dec", 1, False, 0)]
    dec.output_ids.append(0)
    dec.num_computed = 12  # 12 computed + 1 new -> 4 blocks
    assert pick([dec]) == [("dec", 1, False, 1)]


def test_limits_jobs_tokens_and_blocks() -> None:
    jobs = [job(f"j{i}", 8) for i in range(4)]
    assert [r[0] for r in pick(jobs, jobs=2)] == ["j0", "j1"]
    # 20 tokens: j0 and j1 whole, j2 gets a 4-token chunk.
    assert pick(jobs, tokens=20) == [("j0", 8, True, 2), ("j1", 8, True, 2), ("j2", 4, True, 1)]
    assert pick(jobs, tokens=20, chunked_prefill=False) == [("j0", 8, True, 2), ("j1", 8, True, 2)]
    assert pick(jobs, tokens=20, min_chunk_tokens=5) == [("j0", 8, True, 2), ("j1", 8, True, 2)]
    # 3 free blocks: j0 takes 2, nobody else fits (a chunk is never shrunk to fit memory).
    assert pick(jobs, blocks=3) == [("j0", 8, True, 2)]


def test_skips_jobs_that_do_not_fit_and_walks_on() -> None:
    big = job("big", 40)
    small = job("small", 4)
    assert pick([big, small], blocks=5) == [("small", 4, True, 1)]
    first = job("first", 4)
    assert pick([first, big, small], tokens=42, chunked_prefill=False) == [
        ("first", 4, True, 1),
        ("small", 4, True, 1),
    ]


def test_prompt_longer_than_budget_is_cut_when_first() -> None:
    huge = job("huge", 100)
    small = job("small", 4)
    assert pick([huge, small], tokens=32, chunked_prefill=False) == [("huge", 32, True, 8)]
    assert pick([small, huge], tokens=32, chunked_prefill=False) == [("small", 4, True, 1)]


def test_offloaded_jobs_skipped_unless_asked() -> None:
    away = job("away", 8, computed=8, outputs=1, where=KVLocation.HOST)
    moving = job("moving", 8, computed=8, outputs=1, where=KVLocation.TO_DEVICE)
    assert pick([away, moving]) == []
    assert pick([away, moving], include_offloaded=True) == [("away", 1, False, 3)]


def test_dropped_kv_is_recomputed_as_a_prefill() -> None:
    j = job("r", 8, outputs=3)  # KV dropped: computed 0, location NONE
    assert is_prefilling(j)
    assert pick([j]) == [("r", 11, True, 3)]


def test_new_jobs_need_room_for_their_whole_prompt_and_in_flight_jobs_wait() -> None:
    new = job("new", 16)  # 16 tokens + 1 -> 5 blocks to admit, 2 for an 8-token chunk
    assert pick([new], tokens=8, blocks=4) == []
    assert pick([new], tokens=8, blocks=5) == [("new", 8, True, 2)]
    half = job("half", 16, computed=8)  # started: only the next chunk's blocks matter
    assert pick([half], tokens=8, blocks=2) == [("half", 8, True, 2)]
    half.in_flight = True
    assert pick([half]) == []


def test_a_lone_job_prefills_in_solo_sized_chunks() -> None:
    lone = job("lone", 100)
    assert pick([lone], tokens=32, solo_max_tokens=64) == [("lone", 64, True, 16)]
    # A second runnable job (even one that will not fit) keeps the normal budget...
    other = job("other", 8)
    assert pick([lone, other], tokens=32, solo_max_tokens=64)[0] == ("lone", 32, True, 8)
    # ...but one still running in the tick the workers execute does not count.
    other.in_flight = True
    assert pick([lone, other], tokens=32, solo_max_tokens=64) == [("lone", 64, True, 16)]
