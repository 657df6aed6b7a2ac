"""`bertbuild artifacts list|download|history|prune`: browse, fetch, chart and trim published bundles.

    bertbuild artifacts list [--store S] [--model M] [--failed]
    bertbuild artifacts download [--store S] [--model M] [--run ID|latest] [--precision P] --dest DIR|--triton DIR
    bertbuild artifacts history [--store S] --model M [--plot PNG]
    bertbuild artifacts prune [--store S] --model M --keep N [--yes]

The store is a local directory or an fsspec URL (s3://, gs://, ...); default
$BERTBUILD_STORE or runs/store. An S3 store takes its credentials, region and
endpoint from the usual AWS_* variables, or from `--storage-option KEY=VALUE`
(repeatable; s3fs's names: key, secret, endpoint_url, ...). A bucket that is
missing or an endpoint that does not answer is one line, exit 2. A download
whose manifest or checksums are wrong exits non-zero naming the file, and
leaves nothing at or beside DEST. `--triton DIR` lays the bundle's Triton
model repository out at DIR instead. `prune` only lists what it would remove
unless given --yes.
"""

from __future__ import annotations

import functools
from pathlib import Path

from bertbuild.commands.arguments import at_least, storage_option


def add_parser(sub) -> None:
    parser = sub.add_parser("artifacts", help="list, download, chart and prune published bundles")
    actions = parser.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)

    def common(p, model_required: bool = False) -> None:
        p.add_argument("--store", default=None,
                       help="directory or fsspec URL of the artifact store (default: $BERTBUILD_STORE or runs/store)")
        p.add_argument("--storage-option", dest="storage_options", action="append", type=storage_option,
                       default=[], metavar="KEY=VALUE",
                       help="an fsspec option for the store, e.g. endpoint_url=http://127.0.0.1:9000 "
                            "(repeatable; default: the AWS_* environment variables)")
        if model_required:
            p.add_argument("--model", required=True, help="model name")
        else:
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
    where = fetch.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest", type=Path, help="directory to create (must not exist, or be empty)")
    where.add_argument("--triton", type=Path, metavar="DEST",
                       help="lay the bundle's Triton model repository out at DEST (DEST/<model>-<precision>/"
                            "config.pbtxt and 1/); with --precision, that precision's model only")
    fetch.set_defaults(handler=run_download)

    history = actions.add_parser("history", help="one row per released run: versions, EM/F1 and p50 per precision")
    common(history, model_required=True)
    history.add_argument("--plot", type=Path, default=None,
                         help="trend plot to write (.png, .svg or .pdf; default: <model>-history.png in the "
                              "current directory)")
    history.set_defaults(handler=run_history)

    prune = actions.add_parser("prune", help="remove old runs and unreferenced blobs (dry run unless --yes)")
    common(prune, model_required=True)
    prune.add_argument("--keep", type=at_least(0), required=True,
                       help="released runs to keep (newest first; latest is always kept); failed runs likewise")
    prune.add_argument("--yes", action="store_true", help="really remove (default: only list what would go)")
    prune.set_defaults(handler=run_prune)


def _with_store(handler):
    """Run `handler(args)` with `args.store` opened (and checked); a store that stops answering is one line."""

    @functools.wraps(handler)
    def run(args) -> int:
        from bertbuild.artifacts.filesystems import store_errors
        from bertbuild.artifacts.store import as_store

        args.store = as_store(args.store, dict(args.storage_options))
        with store_errors(args.store.url):
            return handler(args)

    return run


@_with_store
def run_list(args) -> int:
    from bertbuild.artifacts.publish import human_size
    from bertbuild.artifacts.store import check_model
    from bertbuild.errors import IntegrityError
    from bertbuild.reporting.text_table import text_table

    store = args.store
    models = [check_model(args.model)] if args.model else store.models()
    rows = []
    for model in models:
        latest = store.latest(model)
        kinds = [(False, "passed")] + ([(True, "failed")] if args.failed else [])
        for failed, status in kinds:
            for run_id in store.runs(model, failed=failed):
                try:
                    manifest = store.read_manifest(model, run_id, failed=failed)
                except IntegrityError:
                    rows.append([model, run_id, "-", "INVALID manifest", "-", "-"])
                    continue
                if manifest is None:
                    continue
                mark = "*" if (not failed and run_id == latest) else ""
                rows.append([model, run_id + mark, manifest.created, status, str(len(manifest.files)),
                             human_size(manifest.total_size)])
    if not rows:
        print(f"no bundles in {store.url}" + (f" for {args.model}" if args.model else ""))
        return 0
    print(text_table([["model", "run", "created", "gates", "files", "size"], *rows], left=None, rule=False))
    print(f"\n{store.url}  (* = latest)")
    return 0


@_with_store
def run_download(args) -> int:
    from bertbuild.artifacts.download import download

    result = download(args.store, args.model, args.triton or args.dest, run=args.run, precision=args.precision,
                      failed=args.failed, triton=args.triton is not None)
    what = "Triton model repository, " if args.triton else ""
    print(f"{result.model} run {result.run_id}: {what}{len(result.files)} files verified -> {result.dest}")
    return 0


@_with_store
def run_history(args) -> int:
    from bertbuild.artifacts.history import read_history
    from bertbuild.reporting.history_plot import write_trend_plot
    from bertbuild.reporting.history_table import history_table
    from bertbuild.reporting.text_table import text_table

    store = args.store
    plot = plot_path(args.plot or Path(f"{args.model}-history.png"))
    entries = read_history(store, args.model)
    if not entries:
        print(f"no released runs of {args.model} in {store.url}")
        return 0
    print(text_table(history_table(entries), left=None, rule=False))
    plot = write_trend_plot(entries, plot)
    print(f"\n{len(entries)} released runs of {args.model} in {store.url}; trend plot: {plot}")
    return 0


PLOT_FORMATS = (".png", ".svg", ".pdf")


def plot_path(path: Path) -> Path:
    """The --plot file: a supported image format in a folder that can be written (one line before any work)."""
    from bertbuild.commands.arguments import output_file
    from bertbuild.errors import UserInputError

    if path.is_dir():
        raise UserInputError(f"--plot {path}: is a directory; name an image file ({', '.join(PLOT_FORMATS)})")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise UserInputError(f"--plot {path}: unsupported format {path.suffix or '(no extension)'!r}; "
                             f"use {', '.join(PLOT_FORMATS)}")
    return output_file(path, "--plot")


@_with_store
def run_prune(args) -> int:
    from bertbuild.artifacts.prune import prune
    from bertbuild.artifacts.publish import human_size

    store = args.store
    plan = prune(store, args.model, args.keep, apply=args.yes)
    verb = "removed" if args.yes else "would remove"
    print(f"{args.model}: keeping the newest {plan.keep} released and failed runs"
          + (f" and latest ({plan.latest})" if plan.latest else "") + f" in {store.url}")
    for title, items in (("released runs", plan.runs), ("failed runs", plan.failed_runs),
                         ("stale staging dirs (killed publishes)", plan.stale_staging)):
        if items:
            print(f"{verb} {len(items)} {title}: {', '.join(items)}")
    if plan.blobs:
        print(f"{verb} {len(plan.blobs)} blobs no kept manifest references ({human_size(plan.blob_bytes)}):")
        for digest, size in plan.blobs.items():
            print(f"  {store.blob_path(digest).removeprefix(store.root).lstrip('/')}  {human_size(size)}")
    if plan.pending:
        print(f"kept {len(plan.pending)} unreferenced blobs that a publish in progress will reference")
    if plan.publishing:
        print(f"kept {len(plan.publishing)} runs a publish in progress is releasing: {', '.join(plan.publishing)}")
    if plan.empty:
        print("nothing to remove")
    elif not args.yes:
        print("dry run: nothing was removed; pass --yes to remove the above")
    return 0
