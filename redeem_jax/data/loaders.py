"""Readers for image datasets stored as LOCAL files; nothing is downloaded.

Supported layouts (``path`` is a file or a directory):

* ``.npz`` with ``x_train, y_train, x_test, y_test`` (the layout of
  ``keras.datasets``' ``mnist.npz``) or the aliases ``train_images``,
  ``train_labels``, ``test_images``, ``test_labels`` (and ``X_train``...);
* MNIST / Fashion-MNIST: a directory with the four IDX files (LeCun et al.
  1998; Xiao et al. 2017), gzipped or not, e.g. ``train-images-idx3-ubyte.gz``;
* CIFAR-10 (Krizhevsky 2009): also the ``cifar-10-batches-py`` directory
  (``data_batch_1..5``, ``test_batch``) of the official Python release.

When ``path`` is None we look in ``$REDEEM_JAX_DATA/<name>`` (default
``~/redeem_jax_data/<name>``), as a directory or ``<name>.npz``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_DATASETS", "load_images", "read_idx", "load_npz", "default_data_dir"]

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_NPZ_ALIASES = {
    "x_train": ("x_train", "X_train", "train_images", "images_train", "train_x"),
    "y_train": ("y_train", "Y_train", "train_labels", "labels_train", "train_y"),
    "x_test": ("x_test", "X_test", "test_images", "images_test", "test_x"),
    "y_test": ("y_test", "Y_test", "test_labels", "labels_test", "test_y"),
}

# IDX type byte -> numpy big-endian dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def default_data_dir() -> Path:
    """``$REDEEM_JAX_DATA`` or ``~/redeem_jax_data``."""
    return Path(os.environ.get("REDEEM_JAX_DATA", "~/redeem_jax_data")).expanduser()


def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    # Decide by content, not by suffix: users often gunzip without renaming.
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (LeCun et al. 1998 format), gzipped or not."""
    buf = _open_maybe_gz(Path(path))
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {buf[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    ndim = buf[3]
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    data = np.frombuffer(buf, dtype, count=int(np.prod(dims)), offset=4 + 4 * ndim)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path | None:
    # Some mirrors spell the stem with a dot ("train-images.idx3-ubyte").
    alt = stem.replace("-idx", ".idx")
    for s in (stem, alt):
        for suffix in ("", ".gz"):
            p = directory / (s + suffix)
            if p.is_file():
                return p
    return None


def _has_idx(directory: Path) -> bool:
    return all(_find_idx(directory, s) is not None for s in _IDX_FILES.values())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads train/test arrays from an ``.npz``, accepting common key aliases."""
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        out = {}
        for canonical, aliases in _NPZ_ALIASES.items():
            found = next((a for a in aliases if a in keys), None)
            if found is None:
                raise KeyError(f"{path} has no {canonical!r} array (accepted names: {aliases}; found {sorted(keys)})")
            out[canonical] = f[found]
    return out


def _load_cifar_batches(directory: Path) -> dict[str, np.ndarray]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(directory / name, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        return np.asarray(d[b"data"]), np.asarray(d[b"labels"])

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = read("test_batch")
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_te,
        "y_test": y_te,
    }


def _expected_layout(name: str) -> str:
    lines = [f"  - an .npz with arrays {list(_NPZ_ALIASES)} (keras' mnist.npz layout)"]
    if name in ("mnist", "fashion_mnist"):
        lines.append("  - a directory with " + ", ".join(f"{s}[.gz]" for s in _IDX_FILES.values()))
    if name == "cifar10":
        lines.append("  - the 'cifar-10-batches-py' directory (data_batch_1..5, test_batch)")
    return "\n".join(lines)


def _resolve(name: str, path: str | os.PathLike | None) -> tuple[Path, str]:
    """Returns the file/directory to read and its layout ("npz"/"idx"/"cifar")."""
    if path is None:
        base = default_data_dir()
        candidates = [base / name, base / f"{name}.npz", base / name / f"{name}.npz",
                      base / name / "cifar-10-batches-py"]
    else:
        p = Path(path).expanduser()
        candidates = [p, p / f"{name}.npz", p / "cifar-10-batches-py"]
    for c in candidates:
        if c.is_file():
            return c, "npz"
        if c.is_dir():
            if name in ("mnist", "fashion_mnist") and _has_idx(c):
                return c, "idx"
            if name == "cifar10" and (c / "data_batch_1").is_file() and (c / "test_batch").is_file():
                return c, "cifar"
    where = f"path={str(path)!r}" if path is not None else f"the default location {default_data_dir() / name}"
    raise FileNotFoundError(
        f"no local files for dataset {name!r} at {where} (redeem_jax never downloads data).\n"
        f"Put one of the following there, or pass path=... to data.load({name!r}, path=...):\n"
        f"{_expected_layout(name)}\n"
        f"(the default location is $REDEEM_JAX_DATA/{name}, currently {default_data_dir() / name})"
    )


def _to_nhwc_unit(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        side = {784: (28, 28, 1), 3072: (3, 32, 32)}.get(x.shape[1])
        if side is None:
            raise ValueError(f"cannot infer image shape of flat {name} rows of width {x.shape[1]}")
        x = x.reshape((-1,) + side)
        if side[0] == 3:  # CIFAR rows are stored channel-major
            x = x.transpose(0, 2, 3, 1)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4:
        raise ValueError(f"{name} images must be [m, H, W(, C)], got shape {x.shape}")
    if x.dtype == np.uint8 or x.max(initial=0) > 1.0:
        return (x.astype(np.float32) / 255.0)
    return x.astype(np.float32)


def load_images(name: str, path: str | os.PathLike | None = None):
    """Loads ``(x_train, y_train, x_test, y_test, source)`` of an image dataset
    from local files; images ``float32 [m, H, W, C]`` in [0, 1], labels int32.

    Raises FileNotFoundError saying where to put the files when none match.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; expected one of {IMAGE_DATASETS}")
    where, layout = _resolve(name, path)
    if layout == "npz":
        arrays = load_npz(where)
    elif layout == "idx":
        arrays = {k: read_idx(_find_idx(where, stem)) for k, stem in _IDX_FILES.items()}
    else:
        arrays = _load_cifar_batches(where)
    x_tr = _to_nhwc_unit(arrays["x_train"], name)
    x_te = _to_nhwc_unit(arrays["x_test"], name)
    y_tr = np.asarray(arrays["y_train"]).reshape(-1).astype(np.int32)
    y_te = np.asarray(arrays["y_test"]).reshape(-1).astype(np.int32)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise ValueError(f"{where}: images and labels differ in count "
                         f"(train {len(x_tr)} vs {len(y_tr)}, test {len(x_te)} vs {len(y_te)})")
    return x_tr, y_tr, x_te, y_te, str(where)
