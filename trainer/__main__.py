"""``python -m mindgap.trainer --data aligned.jsonl --model PATH --loss is --out DIR``

(or ``--redis redis://host:6379/0 --job ID`` instead of ``--data``: the live stream.)

Every ``TrainConfig`` field is a flag (``max_steps`` -> ``--max-steps``; booleans take
``--x`` / ``--no-x``); ``--resume`` alone means ``--resume latest``. Run it under
``torchrun --nproc_per_node N -m mindgap.trainer ...`` for several processes. Prints the summary as
JSON on the last line (rank 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from typing import Any

from mindgap.trainer.config import TrainConfig


def _base_type(annotation: Any) -> Any:
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mindgap.trainer", description="Fine-tune a causal LM on mindgap's aligned "
        "examples with the sft, dft or is loss (DESIGN.md).")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        hint = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "data":
            parser.add_argument(flag, nargs="+", default=[], help=help_text)
        elif f.name == "model":
            parser.add_argument(flag, required=True, help=help_text)
        elif f.name == "resume":
            parser.add_argument(flag, nargs="?", const="latest", default=None, help=help_text)
        elif hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            parser.add_argument(flag, type=hint, default=default, help=help_text,
                                choices=f.metadata.get("choices"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.data) == bool(args.redis):
        parser.error("give --data FILE... or --redis URL (the live stream), one of them")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    from mindgap.trainer.loop import train

    try:
        config = TrainConfig.from_dict(vars(args))
    except ValueError as exc:
        parser.error(str(exc))
    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
