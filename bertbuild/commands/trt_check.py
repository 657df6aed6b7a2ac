"""`bertbuild trt-check FILE.onnx [--trt 10.14|11] [--config CFG.yaml]`: static TensorRT readiness.

Prints one line per offending node (and the verdict on stderr) and exits 1
if TensorRT's ONNX parser would reject the file; exits 0 with a one-line
summary if not; exits 2 for a missing file or one that is not ONNX. No TensorRT
and no GPU are needed: the rules and the operator matrix ship with bertbuild.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from bertbuild.trt_check.matrix import DEFAULT_VERSION, VERSIONS

    parser = sub.add_parser("trt-check", help="check, without TensorRT or a GPU, that TensorRT would take an ONNX file")
    parser.add_argument("onnx", type=Path, metavar="FILE.onnx", help="the ONNX file to check")
    parser.add_argument("--trt", choices=VERSIONS, default=DEFAULT_VERSION,
                        help=f"TensorRT version whose ONNX parser to check against (default {DEFAULT_VERSION})")
    parser.add_argument("--config", type=Path, metavar="CFG.yaml",
                        help="take the optimization profiles from this build config (default: the config defaults)")
    parser.add_argument("--json", type=Path, metavar="REPORT.json", help="also write the report as JSON")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import json
    import sys

    from bertbuild.trt_check import check_onnx

    from bertbuild.commands.arguments import output_file

    if args.json:
        output_file(args.json, "--json")
    profiles = None
    if args.config:
        from bertbuild.config import load_config

        profiles = load_config(args.config).engines.profiles
    report = check_onnx(args.onnx, args.trt, profiles)
    for line in report.findings:
        print(line)
    # stdout holds exactly the offending lines; the verdict goes to stderr when there are any.
    print(report.summary(), file=sys.stdout if report.ready else sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ready else 1
