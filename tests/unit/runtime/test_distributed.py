"""The torchrun helpers: batch slicing, shards, backend choice, recipe checks (no process group), and the collectives
that move replay draws and weight sums (two forked gloo processes)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cann_distill.core.errors import RecipeError, UsageError
from cann_distill.core.recipe import Recipe
from cann_distill.data.loading import Split, loader
from cann_distill.runtime import distributed
from cann_distill.training.epoch import History
from cann_distill.training.loop import SubsetSampler


@pytest.fixture
def as_rank(monkeypatch: pytest.MonkeyPatch):
    """Make the helpers believe this process is `rank` of `world` (no collective is called)."""

    def set_rank(rank: int, world: int) -> None:
        monkeypatch.setattr(distributed, "_group", distributed.Group(rank, world, rank, "gloo", torch.device("cpu"), 60.0))

    return set_rank


def tiny_split(n: int = 30) -> Split:
    images = np.arange(n, dtype=np.float32)
    return Split(
        "train", [f"s{i}" for i in range(n)], np.zeros(n, dtype=np.int64), ["a"], lambda i: images[i], lambda img: torch.tensor([img])
    )


def ids_per_batch(batches) -> list[list[int]]:
    return [idx.tolist() for _, _, idx in batches]


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("subset", [False, True])
def test_rank_slices_union_is_the_one_process_batch_in_order(as_rank, world: int, subset: bool) -> None:
    split = tiny_split()

    def epochs(make_sampler) -> list[list[list[int]]]:  # two epochs of one process's (or one rank's) batches
        batches = loader(split, 8, train=True, seed=3, sampler=make_sampler())
        out = []
        for e in range(2):
            batches.batch_sampler.sampler.set_epoch(e)
            out.append(ids_per_batch(batches))
        return out

    make = (lambda: SubsetSampler(list(range(0, 30, 2)) + [1, 3, 5], seed=3)) if subset else (lambda: None)
    one = epochs(make)
    ranks = []
    for r in range(world):
        as_rank(r, world)
        ranks.append(epochs(make))
    for e in range(2):
        assert len(one[e]) == len(ranks[0][e]) > 1  # as many steps as one process: the step count is global
        for b, batch in enumerate(one[e]):
            assert [i for rank in ranks for i in rank[e][b]] == batch
            assert all(len(rank[e][b]) == 8 // world for rank in ranks)


def test_indivisible_batch_is_refused_with_the_key_named(as_rank) -> None:
    as_rank(0, 2)
    with pytest.raises(RecipeError, match=r"distill.batch_size=33: not divisible by the 2 processes .* use a multiple of 2") as exc:
        distributed.check_divisible({"distill.batch_size": 33, "data.batch_size": 32})
    assert exc.value.exit_code == 2
    with pytest.raises(RecipeError, match="batch_size=30: not divisible by the 4 processes"):
        as_rank(1, 4)
        loader(tiny_split(), 30, train=True)
    distributed.check_divisible({"distill.batch_size": 32})


def test_shards_cut_at_whole_batches_and_cover_every_row(as_rank) -> None:
    for n, align, world in [(10, 4, 2), (200, 32, 2), (7, 8, 2), (100, 1, 3), (65, 16, 4)]:
        as_rank(0, world)
        counts = distributed.shard_counts(n, align)
        assert sum(counts) == n and len(counts) == world
        assert all(c % align == 0 for c in counts[:-1] if c) or n % align
        starts = np.cumsum([0] + counts[:-1])
        for r in range(world):
            as_rank(r, world)
            assert distributed.shard_range(n, align) == (starts[r], starts[r] + counts[r])
    as_rank(0, 2)
    assert distributed.shard_counts(200, 32) == [128, 72]  # 7 batches: 4 + 3, the short one last


def test_split_rows_is_a_view_of_the_shard() -> None:
    part = tiny_split().rows(10, 14)
    assert part.ids == ["s10", "s11", "s12", "s13"] and float(part.fetch(0)) == 10.0 and len(part) == 4


def test_backend_follows_the_device_unless_named() -> None:
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert distributed.backend_for(SimpleNamespace(type="npu")) == "hccl"  # torch.device("npu") needs torch_npu
    assert distributed.backend_for(torch.device("cuda", 0), "gloo") == "gloo"


def test_without_torchrun_everything_is_one_process(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and not distributed.active() and distributed.is_main() and distributed.world() == 1
    assert distributed.lead(lambda: 7) == 7 and distributed.broadcast_object("x") == "x"
    assert distributed.all_reduce_sums({"a": 2.0}) == {"a": 2.0}
    with distributed.session(torch.device("cpu")) as group:
        assert group is None


def test_runtime_keys_are_validated(monkeypatch) -> None:
    from cann_distill.api import make_runtime

    with pytest.raises(Exception, match=r"runtime\.backend"):
        Recipe.model_validate({"runtime": {"backend": "mpi"}})
    with pytest.raises(Exception, match=r"runtime\.dist_timeout_s"):
        Recipe.model_validate({"runtime": {"dist_timeout_s": 0}})
    recipe = Recipe.model_validate({"runtime": {"device": "cpu", "sync_bn": True}})
    assert make_runtime(recipe).sync_bn is True  # one process: nothing to synchronise, nothing to refuse
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UsageError, match="runtime.sync_bn: torch's SyncBatchNorm has no CPU kernel"):
        make_runtime(recipe)


def test_training_batch_sizes_name_the_keys_the_stages_use() -> None:
    from cann_distill.api import training_batch_sizes

    r = Recipe.model_validate({"data": {"batch_size": 30}, "distill": {"batch_size": 64}})
    assert training_batch_sizes(r, ["teacher", "select", "distill"]) == {"data.batch_size": 30, "distill.batch_size": 64}
    assert training_batch_sizes(r, ["validate"]) == {}


@pytest.mark.parametrize(
    ("section", "stages", "key"),
    [
        ({"select": {"strategy": "el2n"}}, ["select"], "distill.batch_size"),  # the probe, at el2n's default 2 epochs
        ({"select": {"strategy": "disagreement", "probe_epochs": 1}}, ["select"], "distill.batch_size"),
        ({"distill": {"epochs": 1, "batch_size": 64, "qat": {"enabled": True, "batch_size": 33}}}, ["distill"], "distill.qat.batch_size"),
    ],
)
def test_probe_and_qad_batch_sizes_are_refused_before_training(as_rank, section: dict, stages: list[str], key: str) -> None:
    """select's student probe trains with distill's batch size, QAD with its own: both are split over the ranks."""
    from cann_distill.api import training_batch_sizes

    recipe = {"data": {"batch_size": 32}, "distill": {"batch_size": 33}}
    r = Recipe.model_validate({**recipe, **section})
    sizes = training_batch_sizes(r, stages)
    assert sizes[key] == 33
    as_rank(0, 2)
    with pytest.raises(RecipeError, match=rf"^{key}=33: not divisible by the 2 processes of this torchrun job") as exc:
        distributed.check_divisible(sizes)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def _gather_worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    """One rank of a forked gloo group: each rank's rows of an int16 array (3 columns) land in rank 0's memmap."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    distributed._group = distributed.Group(rank, world, rank, "gloo", torch.device("cpu"), 60.0)
    try:
        full = np.arange(41 * 3, dtype=np.int16).reshape(41, 3) * (1 - 2 * (np.arange(41 * 3).reshape(41, 3) % 2))
        counts = distributed.shard_counts(41, 4)
        lo, hi = distributed.shard_range(41, 4)
        dest = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.int16, shape=full.shape) if rank == 0 else None
        local = dest[lo:hi] if dest is not None else np.zeros((hi - lo, 3), np.int16)
        local[:] = full[lo:hi]  # rank 0 writes its own rows in place; the others send theirs
        distributed.gather_to_main(dest, local, counts, chunk_bytes=12)  # 2 rows per chunk: several rounds
        calls: list[str] = []
        result, filled = distributed.follow_entry(lambda announce: (announce(), "made")[1], lambda: calls.append("joined"))
        assert filled and result == ("made" if rank == 0 else None) and calls == ([] if rank == 0 else ["joined"])
        result, filled = distributed.follow_entry(lambda announce: "hit", lambda: calls.append("joined again"))
        assert not filled and len(calls) == (0 if rank == 0 else 1)
        # follow_cache: on a miss every rank computes (a sharded pass); on a hit rank 0's array reaches every rank
        arr, status = distributed.follow_cache(lambda compute: (compute(), "miss"), lambda: np.arange(3.0))
        assert np.array_equal(arr, np.arange(3.0)) and status == "miss"
        arr, status = distributed.follow_cache(lambda compute: (np.full(4, 7.0), "hit"), lambda: np.zeros(1))
        assert np.array_equal(arr, np.full(4, 7.0)) and status == "hit"
        # critical weights: each rank's weighted loss sum over its slice / its share of the global weight sum;
        # the mean over ranks (DDP's gradient average) is the one-process weighted mean of the whole batch
        w, loss = torch.tensor([1.0, 2.0, 0.5, 4.0]), torch.tensor([0.3, 1.1, 2.0, 0.7])
        mine = slice(2 * rank, 2 * rank + 2)
        value = torch.tensor([(loss[mine] * w[mine]).sum() / distributed.weight_share(w[mine])])
        dist.all_reduce(value)
        assert torch.allclose(value / world, (loss * w).sum() / w.sum()), value
        # re-mining: each rank scores its own copy of the student; rank 0's mask rules (here the ranks' student
        # logits differ on purpose). No torch compute here: a forked child must not enter the parent's OpenMP pool.
        import types

        from cann_distill.core.recipe import Recipe
        from cann_distill.selection import remining as critical

        recipe = Recipe(select={"top_k_ratio": 0.3, "policy": "hard"}, distill={"epochs": 2, "critical": {"mode": "subset"}})
        n = 60
        train = types.SimpleNamespace(targets=np.arange(n) % 10, classes=[str(c) for c in range(10)])
        teacher = np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
        critical.predict = lambda *a, **k: np.random.default_rng(100 + rank).normal(size=(n, 10)).astype(np.float32)
        mask = critical.Refresher(recipe, None, train, teacher, np.zeros(n, dtype=bool))(1).mask  # type: ignore[arg-type]
        masks = distributed.all_gather_object(mask.tolist())
        assert masks[0] == masks[1] and sum(masks[0]) == round(0.3 * n)
        distributed.check_same("recipe hash", "abc123")  # the same on both ranks: passes
        try:  # a rank launched with another recipe: every rank stops with the line naming both hashes
            distributed.check_same("recipe hash", "aaaa" if rank == 0 else "bbbb")
            raise AssertionError("mismatched recipes were not detected")
        except UsageError as exc:
            assert "the recipe hash differs across the ranks" in str(exc) and "rank 0: aaaa" in str(exc) and "rank(s) 1: bbbb" in str(exc)
        if dest is not None:
            dest.flush()
            np.save(out_path + ".want.npy", full)
    finally:
        distributed._group = None
        dist.destroy_process_group()


def test_gather_to_main_and_follow_entry_across_two_real_processes(tmp_path) -> None:
    """Two forked gloo processes: the other rank's rows arrive at their offsets in rank 0's memory map, chunk by
    chunk; `follow_entry` makes the follower join a fill and only a fill, `follow_cache` gives every rank the array; `weight_share` makes the ranks' weighted
    losses average to the one-process weighted mean; a recipe hash that differs between the ranks stops both."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "dest.npy")
    mp.start_processes(_gather_worker, args=(2, str(tmp_path / "store"), out), nprocs=2, start_method="fork")
    got, want = np.load(out), np.load(out + ".want.npy")
    assert got.dtype == np.int16 and np.array_equal(got, want)


def _write_everything(root: Path) -> None:
    """Every cache and live-log write a training rank reaches, into `root`: the dashboard's live log, a teacher-output
    cache entry, the weights-fingerprint memo, the image-check memo and a Ctrl-C resume checkpoint."""
    from cann_distill.core.recipe import DataConfig, TrainConfig
    from cann_distill.data.images import scan_tree
    from cann_distill.data.loading import _bad_images
    from cann_distill.models.build import checkpoint_weights_fingerprint, save_checkpoint
    from cann_distill.store.cache import OutputCache
    from cann_distill.training.live import EpochLog
    from cann_distill.training.resume import Checkpointing, Position, Resume
    from cann_distill.training.update import Update, make_optimizer

    EpochLog(root / "run", "distill", 2)(0, {"epoch": 1, "loss": 0.5})
    arr, status = OutputCache(root / "cache").get_or_compute({"what": "logits"}, (2, 3), lambda: np.ones((2, 3), np.float32))
    assert status == "miss" and arr.shape == (2, 3)
    net = torch.nn.Linear(2, 2)
    save_checkpoint(root.parent / "inputs" / "teacher.pt", net, "linear", 2, 3)
    checkpoint_weights_fingerprint(root / "cache", root.parent / "inputs" / "teacher.pt", "ab" * 32)
    images = root.parent / "inputs" / "images"
    _bad_images(DataConfig(), images, scan_tree(images))
    cfg = TrainConfig(epochs=1)
    opt = make_optimizer(net, cfg)
    resume = Resume(Checkpointing(root / "run" / "resume.pt", "fp"), "toy", net, Update(net, net, cfg, opt, None, None), dict)
    resume.interrupted(Position(0, 1, {}, None), 1, None, History())


def test_a_rank_other_than_0_writes_no_cache_no_live_log_no_checkpoint(as_rank, tmp_path, monkeypatch) -> None:
    from PIL import Image

    images = tmp_path / "inputs" / "images" / "a"
    images.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(images / "x.png")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "rank1" / "xdg"))
    as_rank(1, 2)
    _write_everything(tmp_path / "rank1")
    assert [p for p in (tmp_path / "rank1").rglob("*") if p.is_file()] == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "rank0" / "xdg"))
    as_rank(0, 2)  # rank 0 writes each of them (so the calls above did reach every writer)
    _write_everything(tmp_path / "rank0")
    written = {p.relative_to(tmp_path / "rank0").parts[:2] for p in (tmp_path / "rank0").rglob("*") if p.is_file()}
    assert written == {("run", ".live"), ("run", "resume.pt"), ("cache", "teacher_outputs"), ("cache", "weights"), ("xdg", "cann-distill")}


def _shared_cache_worker(rank: int, world: int, store_path: str, roots: list[str]) -> None:
    """One rank of a forked gloo group: each rank points at its own cache folder; rank 0's alone is used."""
    import datetime

    import torch.distributed as dist

    from cann_distill.store.cache import OutputCache

    dist.init_process_group(
        "gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    distributed._group = distributed.Group(rank, world, rank, "gloo", torch.device("cpu"), 60.0)
    try:
        cache = OutputCache(Path(roots[rank]))
        # a miss: every rank computes (here each its own value), rank 0 alone stores
        arr, status = cache.shared({"what": "views"}, (3,), lambda: np.full(3, float(rank), np.float32))
        assert status == "miss" and np.array_equal(arr, np.full(3, float(rank)))
        # a hit: rank 0's entry reaches every rank, whatever the others would have computed
        arr, status = cache.shared({"what": "views"}, (3,), lambda: np.full(3, 7.0 + rank, np.float32))
        assert np.array_equal(arr, np.zeros(3)) and status == "hit", (rank, arr, status)
    finally:
        distributed._group = None
        dist.destroy_process_group()


def test_shared_cache_entry_is_read_and_written_by_rank_0_alone(tmp_path) -> None:
    """Two forked gloo processes, each with its own cache folder: only rank 0's folder gets the entry, and on a hit
    both ranks hold rank 0's array."""
    import torch.multiprocessing as mp

    roots = [str(tmp_path / "rank0"), str(tmp_path / "rank1")]
    mp.start_processes(_shared_cache_worker, args=(2, str(tmp_path / "store"), roots), nprocs=2, start_method="fork")
    assert len(list((tmp_path / "rank0" / "teacher_outputs").glob("*.npy"))) == 1
    assert not (tmp_path / "rank1").exists()
