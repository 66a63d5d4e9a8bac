"""Generate (or find cached) test models and print one `name<TAB>path` line for each.

    python -m native.testmodels                 # tiny-bpe, tiny-spm, minilm
    python -m native.testmodels --bench         # the same plus bench (~280 MB)
    python -m native.testmodels bench tiny-spm  # just these

Progress goes to stderr, so stdout can be read by a script.
"""

from __future__ import annotations

import argparse
import sys
import time

from native.testmodels import MODEL_NAMES, TEST_MODEL_NAMES, ensure_model, model_path


def _say(message: str) -> None:
    print(f"[native.testmodels] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m native.testmodels", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"models among {', '.join(MODEL_NAMES)} (default: {' '.join(TEST_MODEL_NAMES)})",
    )
    parser.add_argument("--bench", action="store_true", help="also ensure the bench model")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MODEL_NAMES]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    names = list(args.names or TEST_MODEL_NAMES)
    if args.bench and "bench" not in names:
        names.append("bench")
    for name in names:
        cached = model_path(name).is_file()
        started = time.monotonic()
        path = ensure_model(name)
        if not cached:
            size_mb = path.stat().st_size / 1e6
            _say(f"generated {name}: {size_mb:.1f} MB in {time.monotonic() - started:.1f} s")
        print(f"{name}\t{path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
