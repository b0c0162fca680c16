"""Tests of selectivity.data: formats, locating, archives, splits, batch loader.

Everything runs on small fake data sets built here, except one test that reads the real
CIFAR-10 copy found through $SELECTIVITY_DATA (skipped if it is unset).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selectivity.data import (
    CIFAR10_CLASSES,
    BatchLoader,
    CorruptArchiveError,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageDataset,
    UnsafeArchiveError,
    channel_stats,
    find_cifar10,
    find_tiny_imagenet,
    load_cifar10,
    load_tiny_imagenet,
    read_cifar10,
    safe_extract,
    stratified_split,
)
from selectivity.data import archive as archive_mod
from selectivity.data import cifar10 as cifar10_mod
from selectivity.data import locate as locate_mod
from selectivity.data.archive import ImageDecoder, iter_files


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache, and never see the real data unless a test asks."""
    monkeypatch.setenv("SELECTIVITY_CACHE", str(tmp_path / "cache"))
    real = os.environ.get("SELECTIVITY_DATA")
    monkeypatch.delenv("SELECTIVITY_DATA", raising=False)
    yield real


# ----------------------------------------------------------------------------------------
# Fake CIFAR-10 in both formats

N_PER_BATCH, N_TEST = 20, 30


def _png_bytes(hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, format="PNG")
    return buf.getvalue()


def _tar_dir(src: Path, out: Path, arcname: str | None) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        if arcname is None:  # flat: the tree's content at the archive root
            for child in sorted(src.iterdir()):
                tf.add(child, arcname=child.name)
        else:
            tf.add(src, arcname=arcname)
    return out


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """The same random images as a canonical python release and as a PNG image folder."""
    root = tmp_path_factory.mktemp("fake_cifar")
    rng = np.random.default_rng(123)
    n_train = 5 * N_PER_BATCH
    # every class occurs in both splits; order shuffled like the real batches
    train_labels = rng.permutation(np.arange(n_train) % 10)
    test_labels = rng.permutation(np.arange(N_TEST) % 10)
    train_data = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    test_data = rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8)

    py = root / "cifar-10-batches-py"
    py.mkdir()

    def dump(name, obj):
        with open(py / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for b in range(5):
        sl = slice(b * N_PER_BATCH, (b + 1) * N_PER_BATCH)
        dump(
            f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [int(x) for x in train_labels[sl]],
                b"data": train_data[sl],
                b"filenames": [f"img_{i}.png".encode() for i in range(sl.start, sl.stop)],
            },
        )
    dump(
        "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(x) for x in test_labels],
            b"data": test_data,
            b"filenames": [f"test_{i}.png".encode() for i in range(N_TEST)],
        },
    )
    dump(
        "batches.meta",
        {
            b"num_cases_per_batch": N_PER_BATCH,
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072,
        },
    )
    py_tar = _tar_dir(py, root / "cifar-10-python.tar.gz", "cifar-10-batches-py")

    # Image folder: <split>/<class>/NNNN.png, NNNN = order of appearance within the class.
    folder = root / "cifar10-png"
    for split, data, labels in (("train", train_data, train_labels), ("test", test_data, test_labels)):
        seen = {c: 0 for c in CIFAR10_CLASSES}
        for row, lab in zip(data, labels):
            cls = CIFAR10_CLASSES[lab]
            d = folder / split / cls
            d.mkdir(parents=True, exist_ok=True)
            hwc = row.reshape(3, 32, 32).transpose(1, 2, 0)  # (3072,) -> (C, H, W) -> (H, W, C)
            (d / f"{seen[cls]:04d}.png").write_bytes(_png_bytes(hwc))
            seen[cls] += 1
    nested_tar = _tar_dir(folder, root / "cifar10-png.tar.gz", "cifar10-png")
    flat_tar = _tar_dir(folder, root / "flat.tar", None)

    def expected(data, labels):
        order = np.argsort(labels, kind="stable")  # grouped by class, release order inside
        return data[order].reshape(-1, 3, 32, 32), labels[order]

    return {
        "py_dir": py,
        "py_tar": py_tar,
        "folder": folder,
        "nested_tar": nested_tar,
        "flat_tar": flat_tar,
        "train": expected(train_data, train_labels),
        "test": expected(test_data, test_labels),
    }


def test_both_cifar_formats_load_identically(fake_cifar):
    sources = ["py_dir", "py_tar", "folder", "nested_tar", "flat_tar"]
    loaded = {s: read_cifar10(fake_cifar[s], cache=False) for s in sources}
    exp_train, exp_test = fake_cifar["train"], fake_cifar["test"]
    for s, (train, test) in loaded.items():
        assert train.classes == list(CIFAR10_CLASSES), s
        assert train.images.shape == (5 * N_PER_BATCH, 3, 32, 32) and train.images.dtype == torch.uint8, s
        assert test.images.shape == (N_TEST, 3, 32, 32), s
        assert train.labels.dtype == torch.int64, s
        np.testing.assert_array_equal(train.images.numpy(), exp_train[0], err_msg=s)
        np.testing.assert_array_equal(train.labels.numpy(), exp_train[1], err_msg=s)
        np.testing.assert_array_equal(test.images.numpy(), exp_test[0], err_msg=s)
        np.testing.assert_array_equal(test.labels.numpy(), exp_test[1], err_msg=s)


def test_load_cifar10_splits_and_stats(fake_cifar):
    a = load_cifar10(fake_cifar["folder"], val_size=20, split_seed=3, download=False, cache=False)
    b = load_cifar10(fake_cifar["py_tar"], val_size=20, split_seed=3, download=False, cache=False)
    assert a.split_seed == 3 and len(a.train) == 80 and len(a.val) == 20 and len(a.test) == N_TEST
    assert torch.bincount(a.val.labels, minlength=10).tolist() == [2] * 10
    # same seed selects the same images whichever format they came from
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    ref = a.train.images.double() / 255
    np.testing.assert_allclose(a.mean, ref.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    np.testing.assert_allclose(a.std, ref.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-12)
    assert (a.train.name, a.val.name, a.test.name) == ("cifar10-train", "cifar10-val", "cifar10-test")


def test_decoded_cache_hit_and_invalidation(fake_cifar, tmp_path, monkeypatch):
    src = tmp_path / "cifar10-jpeg.tar.gz"
    src.write_bytes(fake_cifar["nested_tar"].read_bytes())
    first, _ = read_cifar10(tmp_path)
    cached = list((tmp_path / "cache" / "decoded").glob("cifar10-*.npz"))
    assert len(cached) == 1 and not list(cached[0].parent.glob(".*"))  # no temp files left

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(cifar10_mod, "_decode_cifar10", boom)
    second, _ = read_cifar10(tmp_path)  # served from the cache
    assert torch.equal(first.images, second.images)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # a "new" file
    with pytest.raises(AssertionError, match="decoded again"):
        read_cifar10(tmp_path)


def test_image_decoder_worker_processes_match_inline():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    with ImageDecoder(workers=2, chunk_size=7) as dec:
        for i, im in enumerate(imgs):
            dec.add(f"{i}.png", _png_bytes(im))
        names, out = dec.finish()
    assert names == [f"{i}.png" for i in range(40)]
    np.testing.assert_array_equal(out, imgs)
    with ImageDecoder(workers=2, chunk_size=4) as dec:
        for i in range(8):
            dec.add(f"{i}.png", _png_bytes(imgs[i]) if i != 5 else b"not an image")
        with pytest.raises(DatasetFormatError, match="5.png"):
            dec.finish()


def test_grey_and_odd_images_are_converted_or_rejected():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    rgb = archive_mod.decode_image(buf.getvalue(), "g.png")
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == grey).all() and (rgb[..., 2] == grey).all()
    with pytest.raises(DatasetFormatError, match="expected 4x4"):
        archive_mod.decode_image(buf.getvalue(), "g.png", size=(4, 4))


def test_pickle_with_foreign_globals_is_refused(tmp_path, fake_cifar):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    for f in fake_cifar["py_dir"].iterdir():
        (py / f.name).write_bytes(f.read_bytes())
    (py / "data_batch_3").write_bytes(pickle.dumps({b"data": os.system}, protocol=2))
    with pytest.raises(DatasetFormatError, match="data_batch_3"):
        read_cifar10(py, cache=False)


# ----------------------------------------------------------------------------------------
# Locating data; missing and corrupt archives


def test_find_cifar10_forms_and_order(fake_cifar, tmp_path, monkeypatch):
    assert find_cifar10(fake_cifar["py_tar"]) == fake_cifar["py_tar"]
    assert find_cifar10(fake_cifar["folder"]) == fake_cifar["folder"]  # an image-folder root itself
    # a directory holding several forms: the lossless canonical one is preferred
    assert find_cifar10(fake_cifar["py_dir"].parent) == fake_cifar["py_dir"]
    # env var, then cache dir
    d = tmp_path / "data"
    d.mkdir()
    (d / "cifar10-jpeg.tar.gz").write_bytes(b"x")
    monkeypatch.setenv("SELECTIVITY_DATA", str(d))
    assert find_cifar10() == d / "cifar10-jpeg.tar.gz"
    monkeypatch.delenv("SELECTIVITY_DATA")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(b"x")
    assert find_cifar10(download=False) == cache / "cifar-10-python.tar.gz"


def test_missing_data_gives_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="does not exist") as exc:
        find_cifar10(tmp_path / "nope")
    assert isinstance(exc.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="none of the known forms"):
        find_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError) as exc:
        load_cifar10(download=False)
    msg = str(exc.value)
    assert "downloading is disabled" in msg and str(tmp_path / "cache") in msg
    assert "SELECTIVITY_DATA" in msg and "cifar-10-python.tar.gz" in msg and "--data" in msg
    # a failing download (offline, here a missing file: URL) is reported with the same advice
    monkeypatch.setattr(locate_mod, "CIFAR10_URL", (tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(DatasetNotFoundError, match="download from .* failed") as exc:
        find_cifar10(download=True)
    assert str(tmp_path / "cache") in str(exc.value)
    assert not list((tmp_path / "cache").glob("*.part"))  # nothing half-written left behind
    with pytest.raises(DatasetNotFoundError, match="Tiny ImageNet was not found"):
        find_tiny_imagenet()


def test_download_verifies_md5(fake_cifar, tmp_path):
    import hashlib

    url = fake_cifar["py_tar"].as_uri()
    with pytest.raises(OSError, match="md5 mismatch"):
        locate_mod.download_cifar10(tmp_path / "dl", url=url, md5="0" * 32)
    assert not list((tmp_path / "dl").iterdir())
    md5 = hashlib.md5(fake_cifar["py_tar"].read_bytes()).hexdigest()
    got = locate_mod.download_cifar10(tmp_path / "dl", url=url, md5=md5)
    assert got == tmp_path / "dl" / "cifar-10-python.tar.gz"
    assert read_cifar10(got, cache=False)[1].images.shape == (N_TEST, 3, 32, 32)


def test_corrupt_and_truncated_archives(fake_cifar, tmp_path):
    bad = tmp_path / "garbage" / "cifar10-jpeg.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(CorruptArchiveError, match="corrupt, truncated") as exc:
        read_cifar10(bad.parent, cache=False)
    assert str(bad) in str(exc.value) and isinstance(exc.value, ValueError)

    data = fake_cifar["nested_tar"].read_bytes()
    cut = tmp_path / "cut" / "cifar10-jpeg.tar.gz"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=str(cut)):
        read_cifar10(cut, cache=False)
    with pytest.raises(CorruptArchiveError, match=str(cut)):
        safe_extract(cut, tmp_path / "out")
    # an uncompressed tar cut inside a member
    raw = fake_cifar["flat_tar"].read_bytes()
    cut_tar = tmp_path / "cut.tar"
    cut_tar.write_bytes(raw[: len(raw) // 2 + 100])
    with pytest.raises(CorruptArchiveError, match="cut.tar"):
        read_cifar10(cut_tar, cache=False)
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04" + os.urandom(100))
    with pytest.raises(CorruptArchiveError, match="broken.zip"):
        list(iter_files(bad_zip, lambda n: True))


# ----------------------------------------------------------------------------------------
# Archive safety


def _tar_with(path: Path, *members: tuple[str, str, str]) -> Path:
    """members: (kind, name, payload-or-linkname) with kind in file/sym/hard/dev."""
    with tarfile.open(path, "w") as tf:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = arg.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dev": tarfile.CHRTYPE}[kind]
            info.linkname = arg
            tf.addfile(info)
    return path


@pytest.mark.parametrize(
    "members, why",
    [
        ([("file", "../evil.txt", "x")], "leaves the target"),
        ([("file", "/tmp/evil_abs.txt", "x")], "absolute"),
        ([("file", "ok/../../evil.txt", "x")], "leaves the target"),
        ([("sym", "link", "/etc/passwd")], "symlink"),
        ([("sym", "sub/link", "../../outside")], "symlink"),
        ([("hard", "hl", "../outside")], "hard link"),
        ([("dev", "dev0", "")], "device"),
    ],
)
def test_path_traversal_is_refused(tmp_path, members, why):
    arc = _tar_with(tmp_path / "evil.tar", ("file", "good.txt", "fine"), *members)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=why) as exc:
        safe_extract(arc, dest)
    assert isinstance(exc.value, ValueError) and "evil.tar" in str(exc.value)
    assert not (dest / "good.txt").exists()  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()
    with pytest.raises(UnsafeArchiveError):
        list(iter_files(arc, lambda n: True))


def test_zip_traversal_refused_and_safe_archives_extract(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        safe_extract(z, tmp_path / "zdest")
    with pytest.raises(UnsafeArchiveError):
        list(iter_files(z, lambda n: True))
    # a benign archive with a link that stays inside extracts normally
    ok = _tar_with(tmp_path / "ok.tar", ("file", "a/b.txt", "hello"), ("sym", "a/c.txt", "b.txt"))
    dest = safe_extract(ok, tmp_path / "okdest")
    assert (dest / "a" / "b.txt").read_text() == "hello" and (dest / "a" / "c.txt").read_text() == "hello"


def test_existing_symlink_in_dest_is_not_followed_out(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "sneaky").symlink_to(tmp_path / "elsewhere")
    arc = _tar_with(tmp_path / "a.tar", ("file", "sneaky/x.txt", "x"))
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(arc, dest)
    assert not (tmp_path / "elsewhere" / "x.txt").exists()


# ----------------------------------------------------------------------------------------
# Stratified split


def test_stratified_split_properties():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(0).shuffle(labels)
    tr, va = stratified_split(labels, val_size=100, seed=1)
    assert len(va) == 100 and len(tr) == 400
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(500))
    assert np.bincount(labels[va], minlength=10).tolist() == [10] * 10
    tr2, va2 = stratified_split(torch.as_tensor(labels), val_size=100, seed=1)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    _, va3 = stratified_split(labels, val_size=100, seed=2)
    assert not np.array_equal(va, va3)
    _, va4 = stratified_split(labels, val_per_class=3, seed=0)
    assert np.bincount(labels[va4]).tolist() == [3] * 10
    _, va5 = stratified_split(labels, val_size=95, seed=0)  # not divisible: 9 or 10 each
    counts = np.bincount(labels[va5], minlength=10)
    assert counts.sum() == 95 and set(counts.tolist()) <= {9, 10}
    with pytest.raises(ValueError):
        stratified_split(labels, val_per_class=51)
    with pytest.raises(ValueError):
        stratified_split(labels, val_size=501)


# ----------------------------------------------------------------------------------------
# Batch loader


def _toy_dataset(n=50, c=3, h=8, w=8, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageDataset(images, labels, [f"c{i}" for i in range(classes)], "toy")


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_shapes_len_and_normalisation():
    ds = _toy_dataset()
    mean, std = channel_stats(ds.images)
    loader = BatchLoader(ds, 16, shuffle=False, augment=False, mean=mean, std=std)
    assert len(loader) == 4
    batches = _epoch(loader)
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (50, 3, 8, 8)
    assert torch.equal(torch.cat([b[1] for b in batches]), ds.labels)
    ref = (ds.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1).float()) / torch.tensor(std).view(
        1, 3, 1, 1
    ).float()
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)
    assert (
        x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
        and (x.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-4
    )
    dl = BatchLoader(ds, 16, drop_last=True)
    assert len(dl) == 3 and all(b[0].shape[0] == 16 for b in dl)


def test_loader_deterministic_and_resumable():
    ds = _toy_dataset()

    def make(**kw):
        return BatchLoader(ds, 16, shuffle=True, augment=True, **kw)

    a, b = make(seed=7), make(seed=7)
    ea = [_epoch(a) for _ in range(3)]  # epochs 0, 1, 2 uninterrupted
    eb0 = _epoch(b)
    for (xa, ya), (xb, yb) in zip(ea[0], eb0):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(ea[0][0][1], ea[1][0][1])  # a new order every epoch
    resumed = make(seed=7)
    resumed.set_epoch(2)
    for (xa, ya), (xr, yr) in zip(ea[2], _epoch(resumed)):
        assert torch.equal(xa, xr) and torch.equal(ya, yr)
    assert resumed.epoch == 3
    other = _epoch(make(seed=8))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(ea[0], other))
    # a torch.Generator in the same state gives the same stream
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for (x1, _), (x2, _) in zip(_epoch(make(generator=g1)), _epoch(make(generator=g2))):
        assert torch.equal(x1, x2)
    # every sample exactly once per epoch
    ys = torch.cat([y for _, y in ea[1]])
    assert torch.equal(torch.sort(ys).values, torch.sort(ds.labels).values)


def test_augmentation_crops_and_flips_a_hand_made_image():
    h = w = 6
    p = 4
    # every pixel of every channel distinct and non-zero, so a crop identifies itself
    base = (torch.arange(3 * h * w, dtype=torch.int64) + 1).view(3, h, w).to(torch.uint8)
    n = 400
    ds = ImageDataset(
        base.expand(n, 3, h, w).contiguous(), torch.zeros(n, dtype=torch.int64), ["only"], "hand"
    )
    padded = torch.zeros(3, h + 2 * p, w + 2 * p, dtype=torch.uint8)
    padded[:, p : p + h, p : p + w] = base
    candidates = {}
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            candidates[(dy, dx, False)] = crop
            candidates[(dy, dx, True)] = crop.flip(2)
    loader = BatchLoader(ds, 64, shuffle=True, augment=True, seed=0, padding=p)
    seen = set()
    for x, _ in loader:
        u8 = (x * 255).round().to(torch.uint8)  # mean 0, std 1: undo the scaling exactly
        for img in u8:
            match = [k for k, v in candidates.items() if torch.equal(v, img)]
            assert match, "output is not a padded crop (or its mirror) of the input"
            seen.update(match)
    flips = {k[2] for k in seen}
    offsets = {k[:2] for k in seen}
    assert flips == {False, True}
    assert len(offsets) > 40  # 81 possible; 400 draws (fixed seed) hit most of them
    assert any(dy != p or dx != p for dy, dx in offsets)  # shifted crops, showing zero padding
    # no augmentation: images come back untouched
    plain = BatchLoader(ds, 64, shuffle=False, augment=False)
    x, _ = next(iter(plain))
    assert torch.equal((x * 255).round().to(torch.uint8), ds.images[:64])


def test_augmentation_matches_per_sample_reference():
    ds = _toy_dataset(n=20, h=5, w=7)
    loader = BatchLoader(ds, 8, shuffle=True, augment=True, seed=3, padding=2)
    order, offsets, flips = loader._epoch_plan(0)
    out = torch.cat([x for x, _ in loader])
    padded = torch.nn.functional.pad(ds.images, (2, 2, 2, 2))
    for pos, i in enumerate(order.tolist()):
        dy, dx = offsets[pos].tolist()
        crop = padded[i, :, dy : dy + 5, dx : dx + 7]
        if flips[pos]:
            crop = crop.flip(2)
        assert torch.equal((out[pos] * 255).round().to(torch.uint8), crop)


# ----------------------------------------------------------------------------------------
# Tiny ImageNet


@pytest.fixture(scope="module")
def fake_tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("fake_tiny")
    root = base / "tiny-imagenet-200"
    wnids = ["n0300", "n0100", "n0200"]  # deliberately not sorted: wnids.txt order is the label order
    rng = np.random.default_rng(5)
    (root / "val" / "images").mkdir(parents=True)
    (root / "test" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    expected_train = {}
    for k, wnid in enumerate(wnids):
        d = root / "train" / wnid / "images"
        d.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for j in range(4):
            img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            if k == 1 and j == 2:  # Tiny ImageNet has some greyscale JPEGs
                Image.fromarray(img[..., 0], mode="L").save(d / f"{wnid}_{j}.JPEG", format="JPEG")
            else:
                Image.fromarray(img).save(d / f"{wnid}_{j}.JPEG", format="JPEG", quality=95)
            expected_train[(wnid, j)] = np.asarray(Image.open(d / f"{wnid}_{j}.JPEG").convert("RGB"))
    lines = []
    for j in range(6):
        wnid = wnids[j % 3]
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "val" / "images" / f"val_{j}.JPEG", format="JPEG")
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        root / "test" / "images" / "test_0.JPEG"
    )
    zpath = base / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(root.rglob("*")):
            zf.write(f, f.relative_to(base).as_posix())
    tpath = _tar_dir(root, base / "tiny.tar.gz", "tiny-imagenet-200")
    return {"base": base, "root": root, "zip": zpath, "tar": tpath, "wnids": wnids, "train": expected_train}


def test_tiny_imagenet_fake_tree_loads(fake_tiny, monkeypatch):
    s = load_tiny_imagenet(fake_tiny["root"], val_size=3, split_seed=0, cache=False)
    assert s.classes == fake_tiny["wnids"] and s.num_classes == 3
    assert (len(s.train), len(s.val), len(s.test)) == (9, 3, 6)
    assert s.train.images.shape[1:] == (3, 64, 64) and s.test.images.dtype == torch.uint8
    assert torch.bincount(s.val.labels, minlength=3).tolist() == [1, 1, 1]
    assert torch.bincount(s.test.labels, minlength=3).tolist() == [2, 2, 2]
    # full training set: grouped by class in wnids.txt order, file order within a class
    from selectivity.data import read_tiny_imagenet

    train, test = read_tiny_imagenet(fake_tiny["root"], cache=False)
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for k, wnid in enumerate(fake_tiny["wnids"]):
        for j in range(4):
            got = train.images[4 * k + j].permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
            np.testing.assert_array_equal(got, fake_tiny["train"][(wnid, j)])
    # archives (nested one level) and the env var give the same data
    for arc in ("zip", "tar"):
        tr2, te2 = read_tiny_imagenet(fake_tiny[arc], cache=False)
        assert torch.equal(tr2.images, train.images) and torch.equal(te2.labels, test.labels)
    monkeypatch.setenv("SELECTIVITY_DATA", str(fake_tiny["base"]))
    assert find_tiny_imagenet() == fake_tiny["root"]
    s2 = load_tiny_imagenet(val_size=3, split_seed=0)
    assert torch.equal(s2.val.images, s.val.images) and s2.split_seed == 0


def test_tiny_imagenet_bad_annotations(fake_tiny, tmp_path):
    import shutil

    root = tmp_path / "tiny-imagenet-200"
    shutil.copytree(fake_tiny["root"], root)
    ann = root / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text().replace("n0200", "n9999"))
    with pytest.raises(DatasetFormatError, match="n9999"):
        load_tiny_imagenet(root, val_size=3, cache=False)


# ----------------------------------------------------------------------------------------
# The real CIFAR-10 copy


@pytest.mark.slow
def test_real_cifar10(_private_cache, monkeypatch):
    real = _private_cache
    if not real:
        pytest.skip("SELECTIVITY_DATA is not set: no real CIFAR-10 copy to test against")
    monkeypatch.setenv("SELECTIVITY_DATA", real)  # found through the env var, as users would
    t0 = time.perf_counter()
    first = load_cifar10(download=False)  # decodes into the per-test cache dir
    t1 = time.perf_counter()
    second = load_cifar10(download=False)  # from the cache
    t2 = time.perf_counter()
    print(f"\nreal CIFAR-10 load: first {t1 - t0:.2f} s, second (cached) {t2 - t1:.2f} s")
    for s in (first, second):
        assert s.classes == list(CIFAR10_CLASSES)
        assert (len(s.train), len(s.val), len(s.test)) == (45000, 5000, 10000)
        assert s.train.images.shape[1:] == (3, 32, 32) and s.split_seed == 0
        assert torch.bincount(s.test.labels, minlength=10).tolist() == [1000] * 10
        assert torch.bincount(s.val.labels, minlength=10).tolist() == [500] * 10
    assert len(first.train) + len(first.val) == 50000
    means = first.test.images.double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(
        means, torch.tensor([125.99, 123.69, 114.85], dtype=torch.float64), atol=0.02, rtol=0
    )
    assert torch.equal(first.val.images, second.val.images) and first.mean == second.mean
    assert t2 - t1 < t1 - t0
