"""`bertbuild fetch SOURCE`: download, verify and unpack a checkpoint into the cache."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "fetch", help="fetch a checkpoint (ngc://, gdrive://, https://, file://, dir or archive) into the cache",
    )
    parser.add_argument("source", help="e.g. ngc://nvidia/bert_tf_ckpt_large_qa_squad11_amp_384:19.03.1")
    parser.add_argument("--sha256", help="expected sha256 of the download (or of a local directory's files)")
    parser.add_argument("--cache-dir", type=Path, help="default: $BERTBUILD_CACHE or ~/.cache/bertbuild")
    parser.add_argument("--file", action="store_true", help="fetch a single file (e.g. a SQuAD JSON), not a checkpoint")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from bertbuild.fetch.acquire import fetch_checkpoint, fetch_file

    fetch = fetch_file if args.file else fetch_checkpoint
    print(fetch(args.source, sha256=args.sha256, cache_dir=args.cache_dir))
    return 0
