"""The small part of YAML that action.yml and the workflows in docs/ci.md
use, read with the standard library (PyYAML is not always installed):
block mappings and lists by indentation, `|` block scalars, plain and
quoted scalars, comments.  Anything else (flow collections, anchors,
multi-document streams) is refused, so the file stays in this shape."""
from __future__ import annotations

import json
import re


class YamlError(ValueError):
    pass


_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_.$/-]+):(?:\s+(?P<value>.*))?$")


def _scalar(text: str, where: int):
    text = text.strip()
    if text.startswith("#"):
        return ""
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            raise YamlError(f"line {where}: bad double-quoted string") from None
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"line {where}: bad single-quoted string")
        return text[1:-1].replace("''", "'")
    if text[:1] in "{[&*!%@`":
        raise YamlError(f"line {where}: {text[:1]!r}: not in the subset this reader takes")
    text = re.sub(r"\s+#.*$", "", text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else text


class _Reader:
    def __init__(self, text: str) -> None:
        self.raw = text.splitlines()
        self.i = 0

    def _next(self) -> tuple[int, str] | None:
        """The next meaningful line (indent, content), without consuming it."""
        while self.i < len(self.raw):
            line = self.raw[self.i]
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise YamlError(f"line {self.i + 1}: a tab in the indentation")
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                return len(line) - len(line.lstrip(" ")), stripped
            self.i += 1
        return None

    def block(self, indent: int):
        head = self._next()
        if head is None or head[0] < indent:
            return None
        if head[1].startswith("- ") or head[1] == "-":
            return self._list(head[0])
        return self._mapping(head[0])

    def _list(self, indent: int) -> list:
        out = []
        while (head := self._next()) and head[0] == indent and (head[1].startswith("- ") or head[1] == "-"):
            rest = head[1][2:].strip()
            if rest in ("|", "|-", ">", ">-"):
                self.i += 1
                out.append(self._block_scalar(indent, rest))
            elif not rest:
                self.i += 1
                out.append(self.block(indent + 1))
            elif _KEY.match(rest):
                # "- key: value": a mapping whose keys are indented under the dash
                self.raw[self.i] = " " * (indent + 2) + rest
                out.append(self._mapping(indent + 2))
            else:
                self.i += 1
                out.append(_scalar(rest, self.i))
        return out

    def _mapping(self, indent: int) -> dict:
        out: dict = {}
        while (head := self._next()) and head[0] == indent:
            m = _KEY.match(head[1])
            if not m:
                raise YamlError(f"line {self.i + 1}: expected 'key: value', got {head[1][:40]!r}")
            key, value = m["key"], (m["value"] or "").strip()
            if key in out:
                raise YamlError(f"line {self.i + 1}: key {key!r} twice")
            self.i += 1
            if value in ("|", "|-", ">", ">-"):
                out[key] = self._block_scalar(indent, value)
            elif value == "" or value.startswith("#"):
                out[key] = self.block(indent + 1)
            else:
                out[key] = _scalar(value, self.i)
        if head and head[0] > indent:
            raise YamlError(f"line {self.i + 1}: unexpected indentation")
        return out

    def _block_scalar(self, indent: int, style: str) -> str:
        text = self._literal(indent, keep_newline=not style.endswith("-"))
        if style.startswith(">"):
            # folded: lines joined by spaces (this subset has no blank lines in them)
            return " ".join(text.split("\n")).strip() + ("" if style.endswith("-") else "\n")
        return text

    def _literal(self, indent: int, keep_newline: bool) -> str:
        lines, block_indent = [], None
        while self.i < len(self.raw):
            line = self.raw[self.i]
            if line.strip():
                current = len(line) - len(line.lstrip(" "))
                if current <= indent:
                    break
                block_indent = current if block_indent is None else block_indent
                if current < block_indent:
                    raise YamlError(f"line {self.i + 1}: less indented than its block")
                lines.append(line[block_indent:])
            else:
                lines.append("")
            self.i += 1
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines) + ("\n" if keep_newline and lines else "")


def load(text: str):
    reader = _Reader(text)
    data = reader.block(0)
    if reader._next() is not None:
        raise YamlError(f"line {reader.i + 1}: not read (indentation?)")
    return data
