"""The fsspec filesystem behind an artifact store: opened with safe defaults, its failures one line each.

An object store (S3 and S3-compatible servers, GCS, Azure) differs from a
disk in ways the store relies on, so they are handled here, once:

* it has no directories: a prefix exists while an object lies under it, and
  `makedirs` is never called (s3fs would *create a bucket* for it);
* fsspec caches directory listings per filesystem instance, and answers
  `exists` and `size` from them, so another process's new manifest or blob
  would stay invisible: listings are not cached (`use_listings_cache=False`);
* fsspec also reuses one filesystem instance per set of options, and s3fs
  reads the AWS_* variables when an instance is made: each store gets its
  own (`skip_instance_cache=True`), so it uses the environment of now;
* its errors are not all `OSError`: s3fs lets botocore's connection and
  credential errors through as they are.

Credentials and endpoints come from `storage_options` (the config's
`publish.storage_options`, the CLI's `--storage-option KEY=VALUE`) or from the
usual AWS variables, which botocore reads itself: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`,
`AWS_PROFILE` and (botocore >= 1.31) `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from bertbuild.errors import BertbuildError, MissingDependency, StoreUnavailable, UserInputError

# Protocols without directories (see above); fsspec names some of them twice.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})
# The Python package each needs, where a bertbuild extra installs it.
DRIVERS = {"s3": "s3fs", "s3a": "s3fs"}
# Errors of the libraries under s3fs that mean "cannot talk to the store" rather than a bug.
_TRANSPORT_MODULES = ("botocore", "aiobotocore", "aiohttp")


def open_filesystem(location: str, storage_options: dict | None = None):
    """`(fs, root)` for an fsspec URL; a missing driver package is a one-line `MissingDependency`."""
    import fsspec

    from bertbuild._lazy import require

    protocol = location.split("://", 1)[0].lower()
    options = dict(storage_options or {})
    if protocol in DRIVERS:
        require(DRIVERS[protocol])  # names the extra to install
    if protocol in OBJECT_STORES:
        options.setdefault("use_listings_cache", False)
        options.setdefault("skip_instance_cache", True)
    try:
        return fsspec.core.url_to_fs(location, **options)
    except ImportError as exc:  # another protocol's driver: fsspec's message names the package
        raise MissingDependency(f"artifact store {location}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"artifact store {location}: bad storage options {sorted(options)}: {exc}") from None


def check_object_store(fs, root: str, url: str) -> None:
    """The bucket (or container) of `root` exists and answers; else one line saying which and why."""
    bucket = root.strip("/").split("/", 1)[0]
    with store_errors(url):
        try:
            fs.invalidate_cache(bucket)
            fs.info(bucket)
        except FileNotFoundError:
            raise StoreUnavailable(f"artifact store {url}: bucket {bucket!r} does not exist "
                                   "(or the endpoint is not the one that holds it)") from None
        except TypeError as exc:  # s3fs hands unknown options to the client only now, on first use
            raise UserInputError(f"artifact store {url}: a storage option {type(fs).__name__} does not take "
                                 f"({_first_line(exc)})") from None


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn a store that cannot be reached or used into one `StoreUnavailable` line.

    Missing files stay `FileNotFoundError`: callers decide what a missing file means.
    """
    try:
        yield
    except BertbuildError:
        raise
    except PermissionError as exc:
        raise StoreUnavailable(f"artifact store {url}: access denied ({_first_line(exc)}); "
                               "check the credentials (AWS_* variables or storage options)") from None
    except Exception as exc:  # noqa: BLE001 - only the transport errors are translated
        # a connection, timeout or credentials error of the S3 client stack (not an `OSError` there)
        if not any(cls.__module__.split(".")[0] in _TRANSPORT_MODULES for cls in type(exc).__mro__):
            raise
        raise StoreUnavailable(f"artifact store {url}: cannot reach it ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
