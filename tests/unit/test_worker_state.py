import pytest

from fastserve.protocol.common import BlockCopy, SamplingParams
from fastserve.protocol.to_worker import NewJob, ScheduledJob, TickPlan
from fastserve.runtime.worker_state import WorkerJobTable


def test_replays_diffs_into_entries():
    table = WorkerJobTable()
    sp = SamplingParams()
    e = table.apply(TickPlan(1, [NewJob("a", [5, 6, 7], sp)], [ScheduledJob("a", 3, [], [0])]))
    assert e[0].token_ids == [5, 6, 7] and e[0].start_pos == 0 and e[0].block_table == [0]
    e = table.apply(TickPlan(2, [], [ScheduledJob("a", 1, [9], [])]))
    assert e[0].token_ids == [9] and e[0].start_pos == 3 and e[0].num_generated == 1
    e = table.apply(TickPlan(3, [], [], swap_in=[BlockCopy("a", [40], [3])]))
    assert e == [] and table.jobs["a"].block_table == [3]
    table.apply(TickPlan(4, released=["a"]))
    assert "a" not in table.jobs


def test_unknown_job_and_bad_counts_are_errors():
    table = WorkerJobTable()
    with pytest.raises(KeyError, match="unknown job"):
        table.apply(TickPlan(1, [], [ScheduledJob("x", 1)]))
    table.apply(TickPlan(2, [NewJob("a", [1], SamplingParams())], []))
    with pytest.raises(ValueError, match="asked for 5 tokens"):
        table.apply(TickPlan(3, [], [ScheduledJob("a", 5)]))


def test_a_prefix_hit_starts_past_its_cached_tokens_and_shared_blocks_stay_put():
    table = WorkerJobTable()
    sp = SamplingParams()
    new = NewJob("a", [5, 6, 7, 8, 9], sp, num_cached=4)  # its first block is cached
    [e] = table.apply(TickPlan(1, [new], [ScheduledJob("a", 1, [], [10, 11])]))
    assert e.token_ids == [9] and e.start_pos == 4 and e.block_table == [10, 11]
    table.apply(TickPlan(2, [], [ScheduledJob("a", 1, [3], [])]))
    # An upload that kept the shared first block on the device replaces only the rest.
    table.apply(TickPlan(3, swap_in=[BlockCopy("a", [40], [12], keep_blocks=1)]))
    assert table.jobs["a"].block_table == [10, 12]
