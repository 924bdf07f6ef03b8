#!/usr/bin/env python3
"""Checks the shape docs/ARCHITECTURE.md promises, for every crate under crates/:

- no source file under crates/*/src is longer than MAX_LINES (unit test files, `tests.rs`,
  aside);
- no two sibling modules of a crate use each other (dependencies inside a crate go one way;
  a parent and its children may, as a module directory shares its parent's imports).

Uses are read from `crate::a::b`, `super::x` and `use super::{x, y}` paths, and names a
parent re-exports (`pub use child::Name`) count as uses of that child. Exits 1 and names each
offence.
"""

import itertools
import pathlib
import re
import sys

MAX_LINES = 800

ROOT = pathlib.Path(__file__).resolve().parent.parent


def modules(src):
    """Each module path (a tuple) of a crate's src directory, with its text."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        found[tuple(parts)] = path.read_text()
    return found


def uses(module, text):
    """The module paths `module`'s text names, before re-exports are resolved."""
    text = re.sub(r"//[^\n]*", "", text)
    named = set()
    for match in re.finditer(r"\bcrate((?:::\w+)+)", text):
        named.add(tuple(match.group(1).split("::")[1:]))
    for match in re.finditer(r"\bcrate::\{([^}]*)\}", text):
        for item in match.group(1).split(","):
            head = item.strip().split("::")[0]
            if head:
                named.add((head,))
    for match in re.finditer(r"\b((?:super::)+)(\{[^}]*\}|(?:\w+::)*\w+)", text):
        depth = match.group(1).count("super::")
        base = module[:-depth] if depth <= len(module) else ()
        target = match.group(2)
        if target.startswith("{"):
            for item in target.strip("{}").split(","):
                head = item.strip().split("::")[0]
                if head and head != "self":
                    named.add(base + (head,))
        else:
            named.add(base + tuple(target.split("::")))
    return named


def reexports(mods):
    """(parent, Name) -> (parent, child) for every `pub use child::Name` of a parent."""
    table = {}
    pattern = r"pub(?:\([\w:]+\))?\s+use\s+(?:self::)?(\w+)::(\{[^}]*\}|\w+)"
    for module, text in mods.items():
        for match in re.finditer(pattern, text):
            for name in match.group(2).strip("{}").split(","):
                name = name.strip().split(" as ")[-1].strip()
                if name and name != "*":
                    table[module + (name,)] = module + (match.group(1),)
    return table


def resolve(target, table):
    for length in range(len(target), 0, -1):
        if target[:length] in table:
            return table[target[:length]] + target[length:]
    return target


def within(path, module):
    return path[: len(module)] == module


def main():
    offences = []
    for src in sorted(ROOT.glob("crates/*/src")):
        crate = src.parent.name
        for path in sorted(src.rglob("*.rs")):
            relative = path.relative_to(ROOT)
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES and path.name != "tests.rs":
                offences.append(f"{relative}: {lines} lines (at most {MAX_LINES})")
        mods = modules(src)
        table = reexports(mods)
        edges = {
            (module, resolve(target, table))
            for module, text in mods.items()
            for target in uses(module, text)
        }
        for a, b in itertools.combinations(mods, 2):
            if not a or len(a) != len(b) or a[:-1] != b[:-1]:
                continue
            a_uses_b = any(within(s, a) and within(t, b) for s, t in edges)
            b_uses_a = any(within(s, b) and within(t, a) for s, t in edges)
            if a_uses_b and b_uses_a:
                offences.append(
                    f"{crate}: modules {'::'.join(a)} and {'::'.join(b)} use each other"
                )
    for offence in offences:
        print(offence, file=sys.stderr)
    if offences:
        return 1
    print("layout: every source file within its size, every module pair one way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
