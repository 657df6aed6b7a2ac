"""`bertbuild backends`: which engine backends can run on this host, and why not."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser("backends", help="list engine backends and whether this host can run them")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from bertbuild.backends.registry import availability

    for name, (ok, why) in availability().items():
        print(f"{name:12s} {'available' if ok else 'missing'}{'' if ok else ': ' + why}")
    return 0
