"""The pretraining command line, built from the dataclasses: every TrainConfig field is a flag, and so is every
GPTConfig field under `model.`; each field's comment in the source is its --help text.

    args = parse_train_args(["--config", "configs/tiny.yaml", "--max-steps", "50", "--model.n-layer", "2"])
    args.config      # TrainConfig: defaults, then the YAML file, then the flags
    args.overrides   # only what the flags set: {"max_steps": 50, "model.n_layer": 2}

Flags: --field-name VALUE (--field_name works too); bools take --flag, --no-flag or an explicit true/false;
Optional fields take none; --model PRESET replaces the whole model before any --model.FIELD applies.

Why a small argparse module and not tyro or jsonargparse (both build dotted flags from dataclasses): tyro reads
the same inline comments, but prints help and errors as rich panels and has no `--config FILE.yaml` or
`--model PRESET` next to `--model.FIELD` without subcommands; jsonargparse has --config and dotted flags, but takes
help from docstrings. Either would change the config files or the one-line `error: ...` a mistake must end in;
this is ~100 lines of standard library, read top to bottom.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from gpt.config import GPTConfig
from gpt.train.config import TrainConfig


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_optional(inner):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else inner(text)

    parse.__name__ = inner.__name__  # argparse names the type in its errors
    return parse


def _field_parser(tp) -> tuple[Any, bool]:
    """A field's type annotation → (parse function, is_bool)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, is_bool = _field_parser(args[0])
        return _parse_optional(inner), is_bool
    if tp is bool:
        return parse_bool, True
    return tp, False


def field_comments(cls) -> dict[str, str]:
    """Each field's `# comment` in the dataclass source, so --help says what the code says. A comment continues on
    the comment-only lines right below it whose text is indented (`#     more`); a `# ---- section ----` line or
    the next field ends it."""
    found, current = {}, None
    for line in inspect.getsource(cls).splitlines():
        field_line = re.match(r"\s+(\w+): [^=]+= .*?  # (.+)$", line)
        continuation = re.match(r"\s*#\s{2,}(\S.*)$", line)
        if field_line:
            current = field_line.group(1)
            found[current] = field_line.group(2).strip()
        elif continuation and current:
            found[current] += " " + continuation.group(1).strip()
        else:
            current = None
    return found


def _add_field_args(parser: argparse.ArgumentParser, prefix: str, cls) -> None:
    """--field-name VALUE for every dataclass field (--field_name works too), with the field's comment as help;
    bools also take --no-field-name, and an explicit true/false. Values land in dest `prefix + field name`."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name == "model":
            continue
        parse, is_bool = _field_parser(hints[f.name])
        dest, flag = prefix + f.name, prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "see gpt/train/config.py"
        about = (comments.get(f.name, "") + " ").replace("%", "%%")
        hidden = dict(dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if is_bool:
            kw = dict(dest=dest, nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS)
            parser.add_argument(f"--{flag}", **kw, metavar="true|false", help=f"{about}(default: {default})")
            parser.add_argument(f"--no-{flag}", action="store_false", **hidden)
        else:
            kw = dict(dest=dest, type=parse, default=argparse.SUPPRESS)
            parser.add_argument(f"--{flag}", **kw, help=f"{about}(default: {default})")
        if "_" in f.name:  # the underscore spelling, unlisted
            parser.add_argument(f"--{prefix}{f.name}", **{**kw, "help": argparse.SUPPRESS})
            if is_bool:
                parser.add_argument(f"--no-{prefix}{f.name}", action="store_false", **hidden)


@dataclass
class TrainArgs:
    config: TrainConfig  # the config file's values with the command line's overrides applied
    overrides: dict[str, Any]  # only what the command line set, e.g. {"max_steps": 50, "model.n_layer": 2}
    config_path: str | None


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pretrain.py",
        description="Pretrain a GPT-2. Values come from the defaults (the GPT-2 124M run), then --config FILE, "
        "then the flags below. --model PRESET replaces the model; --model.FIELD VALUE sets one GPTConfig field.",
        epilog="Several processes: torchrun --standalone --nproc-per-node N scripts/pretrain.py ... (one per GPU; on "
        "a CPU one thread each, which keeps more of a machine other programs share). CPU threads: the cores other "
        "programs leave free; GPT_THREADS=N chooses. Ctrl-C, SIGTERM or a closed terminal stop at the end of the "
        "step with a checkpoint; continue with --resume. torchrun kills its processes 30 s after a Ctrl-C: where a "
        "step and a checkpoint take longer, give it --shutdown-timeout SECONDS.",
    )
    p.add_argument("--config", default=None, help="YAML file of TrainConfig fields (e.g. configs/tiny.yaml)")
    p.add_argument("--model", dest="model", default=argparse.SUPPRESS, help="model preset: 124M, 355M, mini, tiny…")
    _add_field_args(p, "", TrainConfig)
    _add_field_args(p, "model.", GPTConfig)
    return p


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A new TrainConfig with CLI overrides applied ('model' preset first, then 'model.FIELD' values, then the rest);
    validation runs again on the result."""
    d = cfg.to_dict()
    if "model" in overrides:
        d["model"] = GPTConfig.from_preset(overrides["model"]).to_dict()
    for key, value in overrides.items():
        if key.startswith("model."):
            d["model"][key.removeprefix("model.")] = value
        elif key != "model":
            d[key] = value
    return TrainConfig.from_dict(d)


def parse_train_args(argv: list[str] | None = None) -> TrainArgs:
    """The command line → TrainArgs. A bad flag, value or config file exits with one `error: ...` line (code 2)."""
    parser = build_arg_parser()
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config")
    try:
        base = TrainConfig.from_file(config_path) if config_path else TrainConfig()
        cfg = apply_overrides(base, ns)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    return TrainArgs(cfg, ns, config_path)
