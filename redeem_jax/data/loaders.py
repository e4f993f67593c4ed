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

Files are checked at the door: a damaged or truncated ``.npz`` / IDX / ``.gz`` file, labels
that are not class ids in ``[0, num_classes)``, non-finite pixels and train/test images of
different shapes raise :class:`DataError`, one line naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_DATASETS",
    "load_images",
    "read_idx",
    "load_npz",
    "default_data_dir",
    "DataError",
    "check_labels",
    "check_features",
]

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}


class DataError(ValueError):
    """Data that cannot be used as given: a damaged file, or arrays outside what the task allows.

    The message is one line: the file (or dataset) first, then what is wrong and where.
    """


def _why(e: BaseException) -> str:
    """An exception as one short line (its type and first 200 characters)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def check_labels(y, num_classes: int, what: str, where, one_dim: bool = True) -> np.ndarray:
    """``y`` as int32 class ids in ``[0, num_classes)``, or :class:`DataError` naming ``where``.

    Float labels that are whole numbers are cast (``3.0 -> 3``); any other float, a NaN or a
    non-numeric label is refused rather than truncated. ``one_dim``: labels ``[m]`` or
    ``[m, 1]`` (classification); otherwise any shape (language targets ``[m, L]``).
    """
    y = np.asarray(y)
    if one_dim:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(
                f"{where}: {what} must be class ids of shape [m] or [m, 1], got shape {y.shape} "
                f"(one-hot labels? store their argmax)"
            )
    if y.dtype == np.bool_:
        y = y.astype(np.int32)
    if np.issubdtype(y.dtype, np.floating):
        flat = y.reshape(-1)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where}: {what} has {int(bad.sum())} label(s) that are not whole numbers "
                f"(e.g. {flat[i].item()!r} at index {i}); labels must be class ids 0..{num_classes - 1}"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {what} has dtype {y.dtype}, not integer class ids 0..{num_classes - 1}")
    flat = y.reshape(-1)
    bad = (flat < 0) | (flat >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where}: {what} has {int(bad.sum())} label(s) outside [0, {num_classes}) "
            f"(e.g. {flat[i].item()!r} at index {i}); the dataset has {num_classes} classes"
        )
    return y.astype(np.int32)


def check_features(x, what: str, where) -> np.ndarray:
    """``x`` unchanged if every value is finite, else :class:`DataError` naming the first bad example."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where}: {what} has dtype {x.dtype}, not numbers")
    if np.issubdtype(x.dtype, np.inexact):
        finite = np.isfinite(x)
        if not finite.all():
            bad_rows = ~finite.reshape(x.shape[0], -1).all(axis=1) if x.ndim else ~finite.reshape(1)
            raise DataError(
                f"{where}: {what} has {int((~finite).sum())} non-finite value(s) (NaN or inf) in "
                f"{int(bad_rows.sum())} example(s), the first at index {int(np.argmax(bad_rows))}; "
                "remove or impute them"
            )
    return x


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
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except Exception as e:  # EOFError (truncated), BadGzipFile, zlib.error (corrupt): all mean a bad copy
        raise DataError(f"{path}: damaged or truncated gzip file ({_why(e)}); copy or download it again") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (LeCun et al. 1998 format), gzipped or not.

    The header must describe the file exactly (magic ``00 00 type ndim``, ``ndim`` big-endian
    sizes, then the values); anything else raises :class:`DataError` naming the file.
    """
    path = Path(path)
    buf = _open_maybe_gz(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES or buf[3] == 0:
        raise DataError(
            f"{path}: not an IDX file (its first bytes {bytes(buf[:4])!r} are not an IDX magic "
            "number 00 00 <type> <ndim>)"
        )
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(
            f"{path}: truncated IDX file: its header announces {ndim} dimensions ({header} bytes), "
            f"the file has {len(buf)} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    # math.prod of Python ints: a corrupt header can announce more values than int64 holds.
    expected = header + math.prod(dims) * dtype.itemsize
    if len(buf) != expected:
        state = "truncated" if len(buf) < expected else "damaged"
        raise DataError(
            f"{path}: {state} IDX file: its header announces {dims} values of {dtype.name} "
            f"({expected} bytes), the file has {len(buf)} bytes"
        )
    data = np.frombuffer(buf, dtype, count=math.prod(dims), offset=header)
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
    """Reads train/test arrays from an ``.npz``, accepting common key aliases.

    A file that is not a zip archive, a damaged or truncated one, a missing array and an
    array of Python objects raise :class:`DataError` naming the file (never numpy's
    ``allow_pickle`` hint: nothing here unpickles).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head[:2] != b"PK":
        kind = "a single .npy array" if head == b"\x93NUMPY" else f"its first bytes are {head!r}"
        raise DataError(
            f"{path}: not an .npz archive (an .npz is a zip file starting with b'PK'; {kind}); "
            "save the four arrays with np.savez"
        )
    found = None
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            out = {}
            for canonical, aliases in _NPZ_ALIASES.items():
                found = next((a for a in aliases if a in keys), None)
                if found is None:
                    raise DataError(
                        f"{path}: no {canonical!r} array (accepted names: {', '.join(aliases)}; "
                        f"found {', '.join(sorted(keys)) or 'none'})"
                    )
                out[canonical] = f[found]
    except DataError:
        raise
    except Exception as e:  # zipfile, zlib, numpy's header parser: any of them means the file is unusable
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path}: array {found!r} holds Python objects, which redeem_jax never unpickles; store numeric arrays"
            ) from e
        part = f" (reading array {found!r})" if found else ""
        raise DataError(f"{path}: damaged or truncated .npz archive{part}: {_why(e)}") from e
    return out


def _load_cifar_batches(directory: Path) -> dict[str, np.ndarray]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(directory / name, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            return np.asarray(d[b"data"]), np.asarray(d[b"labels"])
        except FileNotFoundError:
            raise
        except Exception as e:  # unpickling errors, a dict without b"data"/b"labels", ...
            raise DataError(
                f"{directory / name}: damaged CIFAR-10 batch ({_why(e)}); copy the cifar-10-batches-py directory again"
            ) from e

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = read("test_batch")
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_te,
        "y_test": y_te,
    }


def _expected_layout(name: str) -> str:
    lines = [f"an .npz with arrays {', '.join(_NPZ_ALIASES)} (keras' mnist.npz layout)"]
    if name in ("mnist", "fashion_mnist"):
        lines.append("a directory with " + ", ".join(f"{s}[.gz]" for s in _IDX_FILES.values()))
    if name == "cifar10":
        lines.append("the 'cifar-10-batches-py' directory (data_batch_1..5, test_batch)")
    return " or ".join(lines)


def _resolve(name: str, path: str | os.PathLike | None) -> tuple[Path, str]:
    """Returns the file/directory to read and its layout ("npz"/"idx"/"cifar")."""
    if path is None:
        base = default_data_dir()
        candidates = [
            base / name,
            base / f"{name}.npz",
            base / name / f"{name}.npz",
            base / name / "cifar-10-batches-py",
        ]
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
        f"no local files for dataset {name!r} at {where} (redeem_jax never downloads data); put there "
        f"{_expected_layout(name)}, or pass path=... to data.load({name!r}, path=...) (the default location is "
        f"$REDEEM_JAX_DATA/{name}, currently {default_data_dir() / name})"
    )


def _to_nhwc_unit(x: np.ndarray, name: str, where, what: str) -> np.ndarray:
    x = check_features(x, what, where)
    if x.ndim == 2:
        side = {784: (28, 28, 1), 3072: (3, 32, 32)}.get(x.shape[1])
        if side is None:
            raise DataError(
                f"{where}: cannot infer the image shape of {name} {what} from flat rows of width "
                f"{x.shape[1]} (784 is 28x28, 3072 is 3x32x32)"
            )
        x = x.reshape((-1,) + side)
        if side[0] == 3:  # CIFAR rows are stored channel-major
            x = x.transpose(0, 2, 3, 1)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4:
        raise DataError(f"{where}: {name} {what} must be images [m, H, W(, C)], got shape {x.shape}")
    if x.dtype == np.uint8 or x.max(initial=0) > 1.0:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


def load_images(name: str, path: str | os.PathLike | None = None):
    """Loads ``(x_train, y_train, x_test, y_test, source)`` of an image dataset
    from local files; images ``float32 [m, H, W, C]`` in [0, 1], labels int32.

    Raises FileNotFoundError saying where to put the files when none match, and
    :class:`DataError` (one line naming the file) for a damaged file, labels outside
    ``[0, 10)`` or not whole numbers, non-finite pixels, or train and test images of
    different shapes.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; expected one of {IMAGE_DATASETS}")
    where, layout = _resolve(name, path)
    if layout == "npz":
        arrays = load_npz(where)
        files = dict.fromkeys(arrays, where)
    elif layout == "idx":
        files = {k: _find_idx(where, stem) for k, stem in _IDX_FILES.items()}
        arrays = {k: read_idx(f) for k, f in files.items()}
    else:
        arrays = _load_cifar_batches(where)
        files = {
            "x_train": where / "data_batch_*",
            "y_train": where / "data_batch_*",
            "x_test": where / "test_batch",
            "y_test": where / "test_batch",
        }
    x_tr = _to_nhwc_unit(arrays["x_train"], name, files["x_train"], "x_train")
    x_te = _to_nhwc_unit(arrays["x_test"], name, files["x_test"], "x_test")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"{where}: train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}; "
            "both splits must have the same image shape"
        )
    classes = _NUM_CLASSES[name]
    y_tr = check_labels(arrays["y_train"], classes, "y_train", files["y_train"])
    y_te = check_labels(arrays["y_test"], classes, "y_test", files["y_test"])
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DataError(
            f"{where}: images and labels differ in count "
            f"(train {len(x_tr)} vs {len(y_tr)}, test {len(x_te)} vs {len(y_te)})"
        )
    if len(x_tr) == 0:
        raise DataError(f"{where}: no training examples")
    return x_tr, y_tr, x_te, y_te, str(where)
