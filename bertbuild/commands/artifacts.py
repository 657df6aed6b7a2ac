"""`bertbuild artifacts list|download`: browse and fetch published, verified bundles.

    bertbuild artifacts list [--store S] [--model M] [--failed]
    bertbuild artifacts download [--store S] [--model M] [--run ID|latest] [--precision P] --dest DIR

The store is a local directory or an fsspec URL (s3://, gs://, ...); default
$BERTBUILD_STORE or runs/store. A download whose checksums disagree with the
manifest exits 1 naming the file, and leaves nothing at DEST.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("artifacts", help="list and download published bundles (verified against their manifest)")
    actions = parser.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)

    def common(p) -> None:
        p.add_argument("--store", default=None,
                       help="directory or fsspec URL of the artifact store (default: $BERTBUILD_STORE or runs/store)")
        p.add_argument("--model", default=None, help="model name (default: the store's only model)")

    listing = actions.add_parser("list", help="list complete bundles (latest marked with *)")
    common(listing)
    listing.add_argument("--failed", action="store_true", help="also list runs whose gates failed")
    listing.set_defaults(handler=run_list)

    fetch = actions.add_parser("download", help="download a bundle, verify every checksum, then move it to --dest")
    common(fetch)
    fetch.add_argument("--run", default="latest", help="run id, or 'latest' (default)")
    fetch.add_argument("--precision", default=None,
                       help="only files for this precision (e.g. fp32, fp16, int8) plus the manifest and reports")
    fetch.add_argument("--failed", action="store_true", help="download a failed run's reports")
    fetch.add_argument("--dest", required=True, type=Path, help="directory to create (must not exist, or be empty)")
    fetch.set_defaults(handler=run_download)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run_list(args) -> int:
    from bertbuild.artifacts.store import ArtifactStore, check_model

    store = ArtifactStore(args.store)
    models = [check_model(args.model)] if args.model else store.models()
    rows = []
    for model in models:
        latest = store.latest(model)
        kinds = [(False, "passed")] + ([(True, "failed")] if args.failed else [])
        for failed, status in kinds:
            for run_id in store.runs(model, failed=failed):
                manifest = store.read_manifest(model, run_id, failed=failed)
                if manifest is None:
                    continue
                mark = "*" if (not failed and run_id == latest) else ""
                rows.append([model, run_id + mark, manifest.created, status, str(len(manifest.files)),
                             _size(manifest.total_size)])
    if not rows:
        print(f"no bundles in {store.url}" + (f" for {args.model}" if args.model else ""))
        return 0
    header = ["model", "run", "created", "gates", "files", "size"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    print(f"\n{store.url}  (* = latest)")
    return 0


def run_download(args) -> int:
    from bertbuild.artifacts.download import download

    result = download(args.store, args.model, args.dest, run=args.run, precision=args.precision, failed=args.failed)
    print(f"{result.model} run {result.run_id}: {len(result.files)} files verified -> {result.dest}")
    return 0
