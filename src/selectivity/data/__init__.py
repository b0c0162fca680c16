"""Data sets (CIFAR-10, Tiny ImageNet, their -C test sets), the train/validation split and the batch loader.

Typical use::

    from selectivity.data import load_cifar10, BatchLoader

    splits = load_cifar10()                      # 45k / 5k / 10k, split_seed=0
    train = BatchLoader(splits.train, 256, shuffle=True, augment=True,
                        mean=splits.mean, std=splits.std, seed=0)
    for epoch in range(start_epoch, epochs):
        train.set_epoch(epoch)                   # same batches whether resumed or not
        for x, y in train:
            ...

Data are found via an explicit path, ``$SELECTIVITY_DATA`` or the per-user cache
(``$SELECTIVITY_CACHE``); see :mod:`selectivity.data.locate`. :data:`DATASETS`
(:mod:`selectivity.data.registry`) is the one list of datasets.
"""

from .archive import ArchiveError, CorruptArchiveError, UnsafeArchiveError, safe_extract
from .check import DataMismatchError, check_data_matches_checkpoint, check_dataset, data_record
from .cifar10 import CIFAR10_CLASSES, load_cifar10, read_cifar10, read_cifar10_batch, restricted_unpickle
from .corrupted import (
    cifar10_c_corruptions,
    contact_sheet_images,
    iter_cifar10_c,
    load_cifar10_c,
    load_tiny_imagenet_c,
    write_cifar_c,
)
from .loader import BatchLoader, DataSplits, ImageDataset, channel_stats, make_splits, stratified_split
from .locate import (
    CACHE_ENV,
    DATA_ENV,
    DatasetFormatError,
    DatasetNotFoundError,
    cache_dir,
    download_cifar10,
    find_cifar10,
    find_cifar10_c,
    find_corrupted,
    find_tiny_imagenet,
    find_tiny_imagenet_c,
)
from .registry import DATASETS, DatasetInfo, dataset_info, load_dataset, locate_dataset, params_for_dataset
from .tinyimagenet import load_tiny_imagenet, read_tiny_imagenet

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "load_dataset",
    "locate_dataset",
    "params_for_dataset",
    "ArchiveError",
    "BatchLoader",
    "CACHE_ENV",
    "CIFAR10_CLASSES",
    "CorruptArchiveError",
    "DataMismatchError",
    "DATA_ENV",
    "DataSplits",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDataset",
    "UnsafeArchiveError",
    "cache_dir",
    "channel_stats",
    "cifar10_c_corruptions",
    "contact_sheet_images",
    "check_data_matches_checkpoint",
    "check_dataset",
    "data_record",
    "download_cifar10",
    "find_cifar10",
    "find_cifar10_c",
    "find_corrupted",
    "find_tiny_imagenet",
    "find_tiny_imagenet_c",
    "iter_cifar10_c",
    "load_cifar10",
    "load_cifar10_c",
    "load_tiny_imagenet",
    "load_tiny_imagenet_c",
    "make_splits",
    "read_cifar10",
    "read_cifar10_batch",
    "restricted_unpickle",
    "read_tiny_imagenet",
    "safe_extract",
    "stratified_split",
    "write_cifar_c",
]
