#!/usr/bin/env python3
"""Check exported config.json files against Hugging Face transformers.

For each folder given, the script loads config.json with AutoConfig, builds the model with
AutoModelForCausalLM.from_config on the meta device (no weight memory is allocated), and
compares its parameter count with `alphanas arch metrics --json` for the matching
architecture JSON file.

Usage:
    scripts/check_hf_export.py --alphanas target/release/alphanas ARCH.json:EXPORT_DIR ...

Each argument pairs an architecture file with the folder that `alphanas export` wrote for it.
Exits non-zero when any count differs or any config fails to load.
Needs `pip install transformers torch`.
"""

import argparse
import json
import subprocess
import sys


def alphanas_params(binary: str, arch_file: str) -> int:
    result = subprocess.run(
        [binary, "arch", "metrics", arch_file, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(json.loads(result.stdout)["params"])


def transformers_params(export_dir: str) -> tuple[str, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(export_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    # num_parameters counts a tied output head once, as alphanas does.
    return type(model).__name__, model.num_parameters()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alphanas", default="alphanas", help="path of the alphanas binary")
    parser.add_argument("pairs", nargs="+", help="ARCH.json:EXPORT_DIR")
    args = parser.parse_args()

    failures = 0
    for pair in args.pairs:
        arch_file, sep, export_dir = pair.partition(":")
        if not sep:
            print(f"error: argument {pair!r} must be ARCH.json:EXPORT_DIR", file=sys.stderr)
            return 2
        expected = alphanas_params(args.alphanas, arch_file)
        try:
            model_class, actual = transformers_params(export_dir)
        except Exception as error:  # report every config, not only the first failure
            print(f"FAIL {export_dir}: transformers could not build the model: {error}")
            failures += 1
            continue
        verdict = "ok  " if actual == expected else "FAIL"
        print(f"{verdict} {export_dir}: {model_class} has {actual} parameters, alphanas counts {expected}")
        failures += actual != expected
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
