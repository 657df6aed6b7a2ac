"""`bertbuild backends`: which engine backends can run on this host, and why not."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser("backends", help="list engine backends and whether this host can run them")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from bertbuild.backends.registry import availability

    from bertbuild.backends.registry import AUTO, resolve_backend

    found = availability()
    width = max(len(name) for name in [*found, AUTO])
    for name, (ok, detail) in found.items():
        print(f"{name:{width}s} {'available' if ok else 'missing'}{': ' + detail if detail else ''}")
    print(f"{AUTO:{width}s} -> {resolve_backend(AUTO)[0]}")
    return 0
