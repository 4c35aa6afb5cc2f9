"""The `certify` command. Subcommands: demo (more come with the CLI issue)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="certify", description="Certified robustness for PyTorch models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="certify a noise-trained digits classifier with randomized smoothing")
    demo.add_argument("--out", type=Path, default=Path("certify-demo"), help="folder for the results (default: ./certify-demo)")
    demo.add_argument("--sigma", type=float, default=0.25, help="Gaussian noise level (default: 0.25)")
    demo.add_argument("--inputs", type=int, default=100, help="test digits to certify (default: 100)")
    demo.add_argument("--n", type=int, default=10_000, help="noise samples per input (default: 10,000)")
    demo.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from certify import demo as demo_module

        # Checked before the training step, so a typo fails at once.
        if args.inputs < 1:
            parser.error(f"--inputs must be >= 1, got {args.inputs}")
        if args.n < 1:
            parser.error(f"--n must be >= 1, got {args.n}")
        if not 0 < args.alpha < 1:
            parser.error(f"--alpha must lie in (0, 1), got {args.alpha}")
        if not (args.sigma > 0 and args.sigma < float("inf")):
            parser.error(f"--sigma must be finite and > 0, got {args.sigma}")

        try:
            demo_module.run(args.out, sigma=args.sigma, num_inputs=args.inputs, n=args.n, alpha=args.alpha,
                            quiet=args.quiet)
        except (ValueError, TypeError) as exc:
            parser.error(str(exc))  # exit code 2: bad usage or input
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
