"""The package's layers point one way, read from the source itself (ast): a module imports only packages of a
lower layer, or its own package; an import inside a function is for an optional dependency only; nothing
outside `alexnet.training` reaches into the Trainer's private state; files and functions stay readable."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "alexnet"

# Lowest first. A module of layer i may import the package's modules of layers < i and of its own unit.
LAYERS = [
    {"base"},                        # errors, atomic files
    {"runtime", "models", "kernels"},  # device, precision, settings, torchrun | pure nn.Modules + registry |
    #                                  faster execution forms of their layers (torch only)
    {"config"},                      # typed config, presets, field checks, the model a config describes
    {"data", "analysis"},            # readers, loaders, augmentation, a run's data | shapes, params, FLOPs
    {"run", "report"},               # run folder, checkpoints, trained model | plots and the run report
    {"eval", "export"},              # metrics, centre / ten-crop evaluation, predict | ONNX, safetensors
    {"training"},                    # trainer, optimiser and schedules, guards, train()
    {"bench", "experiments"},        # throughput, MFU, baseline, time to accuracy | studies, figures
    {"api"},                         # the Python API for notebooks
    {"cli"},                         # the command line
    {"__init__", "__main__"},        # the package's top level: the API's names, `python -m alexnet`
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
OPTIONAL = {"onnx", "onnxruntime", "onnxscript", "safetensors", "tensorboard", "torch.utils.tensorboard",
            "nvidia", "IPython", "d2l"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(rel.parts), path


def unit_of(module: str) -> str:
    """alexnet.data.run -> data, alexnet.config -> config, alexnet -> __init__."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 or parts[1] == "__init__" else parts[1]


def imports(tree: ast.AST, module: str):
    """(imported module, line, inside a function) for every import statement."""
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[:-node.level] if not module.endswith("__init__") else module.split(".")
                base = ".".join(package + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names] if base == "alexnet" else [base]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in nested


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m, _ in modules()}
    assert units <= set(LEVEL), f"give these a layer: {sorted(units - set(LEVEL))}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in modules():
        unit = unit_of(module)
        for name, line, _ in imports(ast.parse(path.read_text()), module):
            if name != "alexnet" and not name.startswith("alexnet."):
                continue
            target = unit_of(name)
            if name == "alexnet" or (target != unit and LEVEL[target] >= LEVEL[unit]):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_models_import_only_models_and_the_errors():
    for module, path in modules():
        if unit_of(module) != "models":
            continue
        for name, line, _ in imports(ast.parse(path.read_text()), module):
            if name.startswith("alexnet"):
                assert name.startswith("alexnet.models") or name == "alexnet.base.errors", f"{path}:{line} {name}"


def test_imports_inside_functions_are_optional_dependencies_only():
    """... or the CLI's: it parses before it imports what a command runs, so that `--help` answers before torch
    loads (../shared/STYLE.md, "Layers, one way")."""
    inside = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
              for module, path in modules() if unit_of(module) != "cli"
              for name, line, nested in imports(ast.parse(path.read_text()), module)
              if nested and name.split(".")[0] not in OPTIONAL and name not in OPTIONAL]
    assert not inside, "\n".join(inside)


def test_no_private_attribute_is_reached_from_outside():
    """`obj._name` on anything but self / cls: only the module that owns the object may do that."""
    found = []
    for _, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("limit_file,limit_function", [(400, 60)])
def test_files_and_functions_stay_readable(limit_file, limit_function):
    long = []
    for _, path in modules():
        text = path.read_text()
        if len(text.splitlines()) > limit_file:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit_function:
                    long.append(f"{path.relative_to(PACKAGE.parent)}: {node.name}() is {length} lines")
    assert not long, "\n".join(long)


def test_every_package_says_what_it_is_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init} has no docstring"
        assert "import" in doc.lower(), f"{init}'s docstring does not say what the package may import"
