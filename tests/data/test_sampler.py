"""Sharding the chunked order over ranks: each rank trains on, and reads, only its own chunks;
together the ranks visit every training cell once per epoch, in the same number of steps."""

from __future__ import annotations

import numpy as np
import pytest

import scvae_beta.data.backed as backed_mod
from scvae_beta.data import ChunkedSampler, Sampler, count_data, read_backed, sampler_for
from tests.conftest import simulate_counts

CHUNK = 50
KW = dict(chunk_rows=CHUNK, buffer_chunks=3)


def _ranks(world: int, n_cells=1000, val=0.1, batch_size=16, seed=4) -> list[ChunkedSampler]:
    samplers = []
    for rank in range(world):
        s = ChunkedSampler(n_cells, val, batch_size, seed, **KW)
        s.shard(rank, world)
        samplers.append(s)
    return samplers


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_visit_every_cell_once_each_from_its_own_chunks(world):
    samplers = _ranks(world)
    assert all(s.own_chunks for s in samplers)
    for _ in range(2):  # two epochs: the chunks are dealt anew
        epochs = [list(s.epoch()) for s in samplers]
        steps = samplers[0].steps_per_epoch
        assert steps == Sampler(1000, 0.1, 16 * world, 4).steps_per_epoch
        assert [len(e) for e in epochs] == [steps] * world  # the ranks step together
        cells = [np.concatenate(e) for e in epochs]
        np.testing.assert_array_equal(np.sort(np.concatenate(cells)), samplers[0].train_idx)
        chunk_sets = [set(np.unique(c // CHUNK)) for c in cells]
        assert set().union(*chunk_sets) == set(range(1000 // CHUNK))
        assert sum(map(len, chunk_sets)) == 1000 // CHUNK  # disjoint: each chunk on one rank
        assert max(map(len, chunk_sets)) - min(map(len, chunk_sets)) <= 1  # dealt in turn
        for e in epochs:  # near-equal minibatches within a rank, shuffled within buffers
            sizes = [len(b) for b in e]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2
            assert not np.all(np.diff(np.concatenate(e)) > 0)
        # Every rank drew the same numbers: the order streams stay equal.
        states = [s.state_dict()["rng"] for s in samplers]
        assert all(st == states[0] for st in states)


def test_sharded_chunk_order_is_seeded_and_resumes_from_the_state_dict():
    first = [np.concatenate(list(s.epoch())) for s in _ranks(2)]
    again = [np.concatenate(list(s.epoch())) for s in _ranks(2)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = [np.concatenate(list(s.epoch())) for s in _ranks(2, seed=5)]
    assert not np.array_equal(other[0], first[0])
    # After one epoch, rank 0's state (what a checkpoint holds) continues every rank's order.
    samplers = _ranks(2)
    for s in samplers:
        list(s.epoch())
    state = samplers[0].state_dict()
    expected = [np.concatenate(list(s.epoch())) for s in samplers]
    resumed = _ranks(2)
    for s, e in zip(resumed, expected, strict=True):
        s.load_state_dict(state)
        np.testing.assert_array_equal(np.concatenate(list(s.epoch())), e)


def test_too_few_chunks_fall_back_to_parts_of_each_global_minibatch():
    # 3 chunks with training cells over 4 ranks: one rank would get none.
    samplers = _ranks(4, n_cells=150, batch_size=8)
    assert not any(s.own_chunks for s in samplers)
    epochs = [list(s.epoch()) for s in samplers]
    assert [len(e) for e in epochs] == [samplers[0].steps_per_epoch] * 4
    cells = np.concatenate([np.concatenate(e) for e in epochs])
    np.testing.assert_array_equal(np.sort(cells), samplers[0].train_idx)
    for step in zip(*epochs, strict=True):  # parts of one global minibatch: equal sizes
        assert max(map(len, step)) - min(map(len, step)) <= 1


def test_world_of_one_keeps_the_unsharded_order():
    plain = ChunkedSampler(1000, 0.1, 32, 4, **KW)
    one = ChunkedSampler(1000, 0.1, 32, 4, **KW)
    one.shard(0, 1)
    assert not one.own_chunks
    for a, b in zip(plain.epoch(), one.epoch(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("world", [2, 3])
def test_a_rank_reads_only_its_own_chunks_once(tmp_path, monkeypatch, world):
    for name, value in (("CHUNK_ROWS", 16), ("BUFFER_CHUNKS", 2), ("PASS_ROWS", 64)):
        monkeypatch.setattr(backed_mod, name, value)
    simulate_counts(n_cells=400, n_genes=20).write_h5ad(tmp_path / "x.h5ad")
    data, _ = count_data(read_backed(tmp_path / "x.h5ad"))  # 25 chunks of 16 rows
    reads: list[int] = []
    real = backed_mod.BackedCountData.read_rows

    def read_rows(self, start, stop):
        reads.append(start // 16)
        return real(self, start, stop)

    monkeypatch.setattr(backed_mod.BackedCountData, "read_rows", read_rows)
    dealt = []
    for rank in range(world):
        s = sampler_for(data, 0.1, 8, 0)
        s.shard(rank, world)
        assert s.own_chunks
        data._cache.clear()
        reads.clear()
        own = set()
        for idx in s.epoch():
            data.minibatch(idx)
            own |= set((idx // 16).tolist())
        assert sorted(reads) == sorted(own)  # its own chunks, each read once
        dealt.append(own)
    assert sum(map(len, dealt)) == len(set().union(*dealt)) == 25
