import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cann_distill import __version__
from cann_distill.core.files import sha256_file
from cann_distill.core.paths import default_cache_dir, resolve_cache_dir
from cann_distill.models.build import checkpoint_weights_fingerprint, weights_fingerprint
from cann_distill.store.cache import OutputCache, cache_key, produced_by

ARR = np.arange(12, dtype=np.float32).reshape(4, 3)
K1 = {"outputs": "logits", "weights": "w1"}  # what an entry is computed from


def counting(arr: np.ndarray = ARR):
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return arr.copy()

    return compute, calls


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "cann-distill"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cann-distill"
    assert resolve_cache_dir(str(tmp_path / "mine")) == tmp_path / "mine"


def test_miss_then_hit_and_sidecar(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    compute, calls = counting()
    arr, status = cache.get_or_compute(K1, (4, 3), compute)
    assert status == "miss" and len(calls) == 1
    arr2, status = cache.get_or_compute(K1, (4, 3), compute)
    assert status == "hit" and len(calls) == 1 and np.array_equal(arr2, ARR)
    npy, side = cache.paths(cache_key(K1))
    meta = json.loads(side.read_text())
    assert meta == {"key": cache_key(K1), "sha256": sha256_file(npy), "shape": [4, 3], "dtype": "<f4", "produced_by": produced_by(K1)}
    assert meta["produced_by"]["code"] == {"cache_version": 2, "cann_distill": __version__}
    assert np.load(npy, allow_pickle=False).dtype == np.float32


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "sidecar_json", "sidecar_missing", "sidecar_key", "pickled"])
def test_damaged_entry_warns_and_recomputes(tmp_path: Path, damage: str, capsys) -> None:
    cache = OutputCache(tmp_path)
    compute, calls = counting()
    cache.get_or_compute(K1, (4, 3), compute)
    npy, side = cache.paths(cache_key(K1))
    if damage == "flip_byte":
        data = bytearray(npy.read_bytes())
        data[-1] ^= 0xFF
        npy.write_bytes(bytes(data))
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage == "sidecar_json":
        side.write_text("{not json")
    elif damage == "sidecar_missing":
        side.unlink()
    elif damage == "sidecar_key":
        side.write_text(json.dumps({**json.loads(side.read_text()), "key": "other"}))
    elif damage == "pickled":  # a pickle-bearing file whose sidecar was forged to match: refused at load
        np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        side.write_text(json.dumps({**json.loads(side.read_text()), "sha256": sha256_file(npy)}))
    arr, status = cache.get_or_compute(K1, (4, 3), compute)
    assert status == "invalid" and len(calls) == 2 and np.array_equal(arr, ARR)
    err = capsys.readouterr().err
    assert "Warning:" in err and "recomputing" in err
    # the entry is whole again
    assert cache.get_or_compute(K1, (4, 3), compute)[1] == "hit" and len(calls) == 2


def test_shape_mismatch_is_not_used(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    cache.get_or_compute(K1, (4, 3), counting()[0])
    compute, calls = counting(np.zeros((5, 3), dtype=np.float32))
    arr, status = cache.get_or_compute(K1, (5, 3), compute)
    assert status == "invalid" and arr.shape == (5, 3) and len(calls) == 1


def test_unwritable_cache_warns_and_continues(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    arr, status = OutputCache(blocker).get_or_compute(K1, (4, 3), counting()[0])
    assert status == "miss" and np.array_equal(arr, ARR)
    assert "could not write" in capsys.readouterr().err


def test_weights_fingerprint_depends_on_weights_not_on_the_file(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    state = model.state_dict()
    for i in range(2):
        torch.save(state, tmp_path / f"{i}.pt")
    loaded = [torch.load(tmp_path / f"{i}.pt", weights_only=True) for i in range(2)]
    assert weights_fingerprint(loaded[0]) == weights_fingerprint(loaded[1]) == weights_fingerprint(state)
    changed = {k: v.clone() for k, v in state.items()}
    changed["0.weight"][0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(changed) != weights_fingerprint(state)
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1}) != cache_key({"a": 1, "b": 3})


def test_checkpoint_fingerprint_is_memoised_by_file_hash(tmp_path: Path) -> None:
    state = torch.nn.Linear(3, 2).state_dict()
    ckpt = tmp_path / "t.pt"
    torch.save({"arch": "x", "state_dict": state}, ckpt)
    digest = sha256_file(ckpt)
    first = checkpoint_weights_fingerprint(tmp_path / "cache", ckpt, digest)
    assert first == weights_fingerprint(state)
    assert (tmp_path / "cache" / "weights" / f"{digest}.txt").read_text().strip() == first
    # known file hash: the checkpoint is not read again
    assert checkpoint_weights_fingerprint(tmp_path / "cache", tmp_path / "gone.pt", digest) == first
    (tmp_path / "cache" / "weights" / f"{digest}.txt").write_text("garbage")
    assert checkpoint_weights_fingerprint(tmp_path / "cache", ckpt, digest) == first


def test_entry_of_another_teacher_copied_over_this_one_is_refused(tmp_path: Path, capsys) -> None:
    """Issue 9: a swapped entry (another teacher's logits, sidecar key edited, hash still matching) was used."""
    cache = OutputCache(tmp_path)
    other = {**K1, "weights": "w2"}
    cache.get_or_compute(other, (4, 3), counting(ARR + 100)[0])
    npy, side = cache.paths(cache_key(K1))
    other_npy, other_side = cache.paths(cache_key(other))
    npy.write_bytes(other_npy.read_bytes())
    side.write_text(json.dumps({**json.loads(other_side.read_text()), "key": cache_key(K1)}))
    compute, calls = counting()
    arr, status = cache.get_or_compute(K1, (4, 3), compute)
    assert status == "invalid" and len(calls) == 1 and np.array_equal(arr, ARR)
    err = " ".join(capsys.readouterr().err.split())
    assert "was produced with different weights (weights: 'w2', this run: 'w1'); recomputing" in err
    # an entry written before sidecars recorded their origin is not trusted either
    meta = json.loads(side.read_text())
    del meta["produced_by"]
    side.write_text(json.dumps(meta))
    assert cache.get_or_compute(K1, (4, 3), compute)[1] == "invalid"
    assert "records no origin" in capsys.readouterr().err


def test_replaced_content_under_a_rehashed_sidecar_is_caught_by_the_spot_check(tmp_path: Path, capsys) -> None:
    """Issue 9: content replaced and the sidecar's sha256 updated to match; provenance alone cannot see it."""
    cache = OutputCache(tmp_path)
    asked: list = []

    def teacher_rows(rows):
        asked.append(list(rows))
        return ARR[list(rows)] + 1e-4  # another kernel's rounding is fine

    assert cache.get_or_compute(K1, (4, 3), counting()[0], spot_check=teacher_rows)[1] == "miss"
    assert asked == []  # computed just now: nothing to check
    assert cache.get_or_compute(K1, (4, 3), counting()[0], spot_check=teacher_rows)[1] == "hit"
    assert asked == [[0, 1, 2, 3]]
    npy, side = cache.paths(cache_key(K1))
    np.save(npy, ARR[::-1].copy(), allow_pickle=False)
    side.write_text(json.dumps({**json.loads(side.read_text()), "sha256": sha256_file(npy)}))
    assert cache.get_or_compute(K1, (4, 3), counting()[0])[1] == "hit"  # without a spot check it would pass
    compute, calls = counting()
    arr, status = cache.get_or_compute(K1, (4, 3), compute, spot_check=teacher_rows)
    assert status == "invalid" and len(calls) == 1 and np.array_equal(arr, ARR)
    assert "does not match the teacher on 4 spot-checked samples" in " ".join(capsys.readouterr().err.split())
