"""`bertbuild passes`: the fusion passes, in the order they run."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser("passes", help="list the ONNX fusion passes in the order they run")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from bertbuild.fuse import DEFAULT_ORDER, PASSES, TARGET_OPSET

    width = max(len(name) for name in DEFAULT_ORDER)
    for index, name in enumerate(DEFAULT_ORDER, 1):
        print(f"{index}. {name.ljust(width)}  {PASSES[name].summary}")
    print(f"then: Identity/no-op Slice removal, constant folding, cleanup, strict checker at opset {TARGET_OPSET}")
    return 0
