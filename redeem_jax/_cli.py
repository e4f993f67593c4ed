"""What the two command lines (``python -m redeem_jax``, ``python -m redeem_jax.sweep``) share.

``--config`` takes a shipped config's name (``redeem_jax/configs/<name>.py``) or a path to a
file; every mistake on the command line (a config that does not exist, an unknown field, a
value that does not parse as the field's type) ends in one line ``error: config…: …`` on
stderr and exit code 2, before JAX starts; ``--cpu_devices`` (or a ``perf.mesh`` larger than
one device) sets the number of CPU devices before JAX creates its CPU client.

Nothing here imports JAX at module level: the device count must be fixed before JAX starts.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path

USAGE_EXIT = 2  # like argparse: a command line that cannot run


class CliError(Exception):
    """A command-line mistake; its message is the text after ``error: ``."""


def fail(message: str) -> None:
    """Print ``error: <message>`` (one line) to stderr and exit with code 2."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(USAGE_EXIT)


def _shipped():
    # Not `from redeem_jax import configs`: that goes through the package's lazy __getattr__,
    # which installs the PRNG lowering and so imports JAX (2 s of `--help`).
    return importlib.import_module("redeem_jax.configs")


def _config_arg(argv: list[str]) -> tuple[int, str] | None:
    """``(index, value)`` of ``--config`` in ``argv`` (``--config X`` or ``--config=X``), or None."""
    for i, a in enumerate(argv):
        if a in ("--config", "-config"):
            return (i + 1, argv[i + 1]) if i + 1 < len(argv) else (i, "")
        if a.startswith(("--config=", "-config=")):
            return i, a.split("=", 1)[1]
    return None


def resolve_config(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` with a shipped config's name replaced by its file, and that file.

    A file that exists wins over a shipped name; ``path:arg`` passes ``arg`` to ``get_config``
    as ml_collections does. Raises :class:`CliError` for a missing file or an unknown name.
    """
    found = _config_arg(argv)
    if found is None:
        return argv, None
    i, value = found
    names = _shipped().names()
    listed = ", ".join(names)
    if not value:
        raise CliError(f"config: --config needs a value: a shipped config ({listed}) or a path to a .py file")
    file, sep, arg = value.partition(":")
    if Path(file).is_file():
        return argv, Path(file)
    if file in names:
        path = _shipped().path(file)
        new = str(path) + sep + arg
        out = list(argv)
        out[i] = f"--config={new}" if out[i].startswith(("--config=", "-config=")) else new
        return out, path
    near = difflib.get_close_matches(Path(file).stem, names, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    if file.endswith(".py") or os.sep in file or "/" in file:
        raise CliError(f"config: no such file: {file!r} (the shipped configs, by name: {listed}){hint}")
    raise CliError(f"config: {file!r} is neither a shipped config ({listed}) nor a file{hint}")


def load_config(path: Path, argument: str = ""):
    """The ConfigDict of config file ``path`` (its ``get_config()``), loaded as ml_collections does."""
    spec = importlib.util.spec_from_file_location("_redeem_jax_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def _leaves(d, prefix=""):
    """``{"a.b": value}`` of a nested dict/ConfigDict and the set of its section paths."""
    leaves, sections = {}, set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        if hasattr(v, "items"):
            sections.add(key)
            sub, subsec = _leaves(v, key + ".")
            leaves.update(sub)
            sections |= subsec
        else:
            leaves[key] = v
    return leaves, sections


def unknown_field(key: str, known) -> str:
    """``config.<key>: unknown field; did you mean config.<closest>?`` (difflib over ``known``)."""
    known = list(known)
    sections = sorted({k.split(".")[0] for k in known if "." in k})
    if "." not in key:  # a top-level name: a section or a top-level field, not a deep leaf
        near = difflib.get_close_matches(key, sections + [k for k in known if "." not in k], n=1, cutoff=0.6)
        return f"config.{key}: unknown field" + (f"; did you mean config.{near[0]}?" if near else "")
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not near:  # a misspelled section: match the section, then the field within it
        head, _, leaf = key.partition(".")
        sec = difflib.get_close_matches(head, sections, n=1, cutoff=0.6)
        if sec and leaf:
            near = difflib.get_close_matches(f"{sec[0]}.{leaf}", known, n=1, cutoff=0.5)
        elif sec:
            near = sec
    hint = f"; did you mean config.{near[0]}?" if near else ""
    return f"config.{key}: unknown field{hint}"


def override_keys(argv: list[str], prefix: str) -> list[str]:
    """The dotted keys of ``--<prefix>.<key>[=value]`` (and ``--no<prefix>.<key>``) in ``argv``."""
    out = []
    for a in argv:
        m = re.match(rf"^-{{1,2}}(?:no)?{re.escape(prefix)}\.([^=]+)", a)
        if m:
            out.append(m.group(1))
    return out


def check_fields(keys, config) -> None:
    """Raise :class:`CliError` for the first key of ``keys`` that names no field of ``config``."""
    leaves, sections = _leaves(config)
    for key in keys:
        if key not in leaves and key not in sections:
            raise CliError(unknown_field(key, leaves))


def _flag_error_line(e: Exception, config) -> str:
    """One line for an absl flag error; ``config.<field>: …`` for a ``--config.<field>`` value."""
    text = " ".join(str(e).split())
    m = re.match(r"^flag --(config\.[^=\s]+)=(.*?): (.*)$", text)
    if not m:
        return text
    field, raw, why = m.groups()
    kind = ""
    if config is not None:
        value = _leaves(config)[0].get(field.split(".", 1)[1])
        if value is not None:
            kind = f" as {type(value).__name__}"
    why = why.split(". ")[0].rstrip(".")  # ml_collections appends quoting advice after the reason
    if kind == " as bool":
        why = "use True or False"
    return f"{field}: cannot read {raw!r}{kind} ({why})"


def parse_flags(argv: list[str], flag_values, axes=()):
    """A ``flags_parser`` for ``absl.app.run``: resolves ``--config``, checks every
    ``--config.<field>`` (and each field of ``axes``: the sweep's ``--sweep.<field>``) against
    the config's fields, then parses the flags; any mistake is one ``error:`` line, exit code 2."""
    from absl import flags

    try:
        argv, path = resolve_config(argv)
        sys.argv[:] = argv  # ml_collections reads the overrides from sys.argv itself
        config = None
        if path is not None:
            found = _config_arg(argv)
            argument = found[1].partition(":")[2] if found else ""
            config = load_config(path, argument)
            if hasattr(config, "items"):
                check_fields(override_keys(argv, "config") + list(axes), config)
        try:
            return flag_values(argv)
        except flags.Error as e:
            raise CliError(_flag_error_line(e, config)) from None
    except CliError as e:
        fail(str(e))


def cpu_devices_needed(flag: int, mesh=(), sweep_devices: int = 0) -> int:
    """The number of CPU devices to ask JAX for: ``--cpu_devices`` if given, else as many as the
    mesh (``perf.mesh``, the product of its positive sizes) or ``--sweep_devices`` needs; 0: JAX's default."""
    need = max(
        math.prod(s for s in tuple(mesh or ()) if s > 0) if mesh else 0, sweep_devices if sweep_devices > 0 else 0
    )
    return flag if flag > 0 else (need if need > 1 else 0)


def set_cpu_devices(n: int) -> None:
    """Make JAX's CPU client start with ``n`` devices (fake devices on one host; GPUs and TPUs are
    unaffected). Must run before any JAX computation: the count is fixed when the client starts."""
    if n <= 0:
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as e:  # a backend already exists (JAX was used before the command line ran)
        raise CliError(f"cpu_devices: JAX has already started, so the CPU device count is fixed ({e})") from None


def help_text(prog: str, flags_help: list[tuple[str, str]]) -> str:
    """``--help``: usage, the shipped configs, the config's sections and the flags."""
    from redeem_jax.experiment.config import base_config

    configs = _shipped()
    lines = [
        f"usage: {prog} --config NAME_OR_FILE [--config.<section>.<field>=VALUE ...] [flags]",
        "",
        "shipped configs (--config NAME; or --config path/to/file.py with a get_config()):",
    ]
    width = max(map(len, configs.names()))
    lines += [f"  {n:<{width}}  {configs.describe(n)}" for n in configs.names()]
    base = base_config()
    top = [k for k, v in base.items() if not hasattr(v, "items")]
    lines += ["", "config sections (override a field with --config.<section>.<field>=VALUE):"]
    for k, v in base.items():
        if hasattr(v, "items"):
            lines.append(f"  {k}: {', '.join(v.keys())}")
    lines.append(f"  (top level): {', '.join(top)}")
    lines += ["", "flags:"] + [f"  {name}  {text}" for name, text in flags_help]
    lines += [
        "",
        "every field, its default and allowed values: redeem_jax/experiment/config.py; "
        "--helpfull lists absl's own flags",
    ]
    return "\n".join(lines)


def wants_help(argv: list[str]) -> bool:
    """Whether ``argv`` asks for ``--help`` (``-h``, ``--helpshort``; not ``--helpfull``)."""
    return any(a in ("--help", "-h", "-help", "--helpshort", "-?") for a in argv[1:])
