"""`alexnet list keys|models|presets|studies|precisions|ops`: what can be named on the command line, read from
the code itself (the config dataclasses, the model, study and augmentation registries, the preset files,
`PRECISIONS`), so the answer never drifts from what `train --set`, `--model`, `--preset`, `--precision` and
`data.train_augment` accept.

The parser is torch-free; the listing imports the registries when it runs.
"""

import dataclasses
import inspect
import re
import shutil
import textwrap

WHAT = ("keys", "models", "presets", "studies", "precisions", "ops")
FIELD = re.compile(r"^    (\w+):[^#]*?(?:#\s?(.*))?$")  # `    name: type = default  # meaning`
MORE = re.compile(r"^\s+#\s?(.*)$")                        # a comment line that carries the meaning on
BARE_LIST = re.compile(r"[\w:-]+( \| [\w:-]+)+")           # a comment that only lists the choices: a | b | c
ENTRY = re.compile(r'^\s+"([\w-]+)":\s*\w+,\s*#\s*(.*)$')  # `    "name": module,   # what it measures`


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="what can be named: --set keys (type, default, meaning), models, presets, "
                       "studies, precisions, augmentation ops")
    p.add_argument("what", choices=WHAT, metavar="WHAT",
                   help="keys: every `train --set KEY=VALUE` key with its type, default and meaning, model options "
                        "per model; models, presets, studies, precisions: the names the commands take; ops: the "
                        "augmentation ops of data.train_augment / eval_augment with their parameters")
    p.add_argument("--model", help="keys: the model.<option> defaults of this model only (default: every model's)")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from alexnet.base.errors import AlexNetError
    if args.model is not None and args.what != "keys":
        raise AlexNetError("--model goes with `alexnet list keys`")
    print("\n".join({"keys": lambda: _keys(args.model), "models": _models, "presets": _presets,
                     "studies": _studies, "precisions": _precisions, "ops": _ops}[args.what]()))
    return 0


def field_notes(cls) -> dict[str, str]:
    """A dataclass's fields -> the comments written beside them in its source (continuation lines joined)."""
    notes: dict[str, str] = {}
    name = None
    for line in inspect.getsource(cls).splitlines():
        field, more = FIELD.match(line), MORE.match(line)
        if field:
            name = field.group(1)
            notes[name] = (field.group(2) or "").strip()
        elif more and name is not None:
            notes[name] = f"{notes[name]} {more.group(1).strip()}".strip()
        else:
            name = None
    return notes


def type_name(annotation) -> str:
    """int -> "int", str | None -> "str | None", list[dict] -> "list[dict]" (a string annotation as written)."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell; the last one wrapped to the terminal's width."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    left = len(indent) + sum(w + 2 for w in widths)
    room = max(30, shutil.get_terminal_size((120, 24)).columns - left - 1)
    lines = []
    for row in rows:
        head = indent + "".join(cell.ljust(w + 2) for cell, w in zip(row, widths, strict=False))
        wrapped = textwrap.wrap(row[-1], room) or [""]
        lines += [(head + wrapped[0]).rstrip()] + [" " * left + more for more in wrapped[1:]]
    return lines


def _keys(model: str | None) -> list[str]:
    from alexnet.cli.args import choose_model
    from alexnet.config import DATASETS, NORMALIZATIONS, SCHEDULES, Config
    from alexnet.models import list_models
    from alexnet.runtime.precision import PRECISIONS

    choices = {"data.dataset": DATASETS, "data.normalize": NORMALIZATIONS, "optim.schedule": SCHEDULES,
               "train.precision": PRECISIONS}
    cfg = Config()
    lines = ["`alexnet train --set KEY=VALUE` (the value is read as YAML; a preset sets many of these):", ""]
    rows = [["key", "type", "default", "meaning"]]
    for section in ("data", "optim", "train"):
        part = getattr(cfg, section)
        notes = field_notes(type(part))
        for f in dataclasses.fields(part):
            key = f"{section}.{f.name}"
            note = notes.get(f.name, "")
            if key in choices:  # from the tuples the checks use; the comment only where it says more
                note = f"one of {', '.join(choices[key])}" + ("" if BARE_LIST.fullmatch(note) else f"; {note}")
            rows.append([key, type_name(f.type), repr(getattr(part, f.name)), note])
    names = [choose_model(model)] if model is not None else list_models()
    rows.append(["model.name", "str", "(the preset's)", f"one of {', '.join(list_models())}"])
    lines += _table(rows) + ["", *_model_options(names)]
    return lines


def _model_options(names: list[str]) -> list[str]:
    """model.<option>: one row per option, one column of defaults per model ('-': that model has no such option)."""
    from alexnet.models import model_info
    defaults = {name: model_info(name).options for name in names}
    options: dict[str, str] = {}
    for opts in defaults.values():
        for f in dataclasses.fields(opts):
            if f.name not in ("in_channels", "input_size", "num_classes"):  # these follow the data section
                options.setdefault(f.name, type_name(f.type))
    rows = [["model.<option>", "type", *names[:-1], names[-1]]]
    for option, kind in options.items():
        cells = [repr(getattr(defaults[n], option)) if hasattr(defaults[n], option) else "-" for n in names]
        rows.append([f"model.{option}", kind, *cells])
    return ["model options and each model's defaults (in_channels, input_size and num_classes follow "
            "data.dataset, data.input_size and the dataset's classes):", "", *_table(rows)]


def _models() -> list[str]:
    from alexnet.models import list_models, model_info
    rows = [["model", "designed for (C x H x W)"]]
    rows += [[name, "x".join(map(str, model_info(name).input_shape))] for name in list_models()]
    return _table(rows, indent="") + ["", "Their layers: `alexnet summary --model NAME`; their options: "
                                      "`alexnet list keys`."]


def _presets() -> list[str]:
    from alexnet.config import list_presets, load_preset
    rows = [["preset", "recipe"]]
    for name in list_presets():
        cfg = load_preset(name)
        t = cfg.train
        rows.append([name, f"{cfg.model.name} on {cfg.data.dataset} at {cfg.data.input_size} px, batch "
                           f"{t.batch_size}, {t.epochs} epochs, {cfg.optim.schedule} lr {cfg.optim.lr}"])
    return _table(rows, indent="")


def _studies() -> list[str]:
    """The registry's names, each with the comment written beside it there (else its module's first line)."""
    from alexnet.experiments import STUDIES, registry
    notes = {m.group(1): m.group(2) for m in map(ENTRY.match, inspect.getsource(registry).splitlines()) if m}
    rows = [["study", "what it measures"]]
    rows += [[name, notes.get(name) or (inspect.getdoc(module) or "").split("\n")[0]]
             for name, module in STUDIES.items()]
    return _table(rows, indent="") + ["", "Run one: `alexnet experiment NAME --out DIR [--budget small|full|tiny]`."]


def _ops() -> list[str]:
    """Each augmentation op with its parameters and their defaults (what the pipeline's registry checks)."""
    from alexnet.data.pipeline import INPUT_SIZE, OPS

    def shown(value) -> str:
        if value is INPUT_SIZE:
            return "the input size"
        if value is None:
            return "the image height"
        return str(tuple(round(v, 4) for v in value)) if isinstance(value, tuple) else str(value)
    rows = [["op", "parameters (default)"]]
    rows += [[name, ", ".join(f"{p}={shown(spec.default)}" for p, spec in op.params.items()) or "-"]
             for name, op in sorted(OPS.items())]
    return _table(rows, indent="") + ["", "In a config or --set: data.train_augment='[{op: hflip}, {op: "
                                      "random_erasing, p: 0.5}]'.", "They run in order on [0, 1] images, before the "
                                      "normalisation; what each does: alexnet/data/augment.py."]


def _precisions() -> list[str]:
    import torch

    from alexnet.runtime.precision import PRECISIONS, resolve_precision
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    auto = resolve_precision("auto", device)
    return [", ".join(PRECISIONS), f"auto on this machine ({device.type}): {auto.name} ({auto.reason})"]
