"""What a backup leaves out, and the lists of what it takes in, with restic's semantics.

Patterns use Go's ``filepath.Match`` syntax per path component (``*`` and ``?`` never match
``/``; ``[...]`` is a class, ``[^...]`` a negated one; ``\\`` escapes) plus ``**`` as a whole
component for any number of directories. They are matched against the absolute path: a leading
``/`` anchors a pattern at the root, any other pattern matches a run of whole components
anywhere, and a path is matched when the pattern matches it or one of its parent directories.
``!pattern`` cancels the match of an earlier pattern of the same list.

Paths are bytes; patterns and paths are compared as ``str`` decoded the way ``os.fsdecode``
does (surrogateescape), so a name that is not UTF-8 matches byte for byte, and ``?`` takes one
undecodable byte as Go takes one invalid UTF-8 byte.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from drengine.core.errors import UsageError

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
# Go's unicode.IsSpace, what strings.TrimSpace strips (str.strip() would also take \x1c-\x1f).
_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
_DSTAR = "(?:[^/]*/)*"  # "**": any number of whole components
_SIZE = re.compile(r"([+-]?[0-9]+)([bBkKmMgGtT]?)")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_INT64_MAX = (1 << 63) - 1


def _fsdecode(path: bytes) -> str:
    return path.decode(_FS_ENCODING, _FS_ERRORS)  # os.fsdecode without its type dispatch


@dataclass(frozen=True)
class ExcludeRules:
    """The exclude options of one backup, as given (validated when an ``Excluder`` is made).

    ``patterns`` holds ``--exclude`` then the ``--exclude-file`` lines, in that order (the
    order matters for ``!`` patterns); ``ipatterns`` the same for ``--iexclude[-file]``.
    ``if_present`` holds ``NAME[:HEADER]`` specs; ``larger_than`` is a size in bytes.
    """

    patterns: tuple[str, ...] = ()
    ipatterns: tuple[str, ...] = ()
    exclude_caches: bool = False
    if_present: tuple[str, ...] = ()
    larger_than: int | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.patterns
            or self.ipatterns
            or self.exclude_caches
            or self.if_present
            or self.larger_than is not None
        )


# ---- patterns -------------------------------------------------------------------------------


class _BadPattern(ValueError):
    pass


def _clean(p: str) -> str:
    """Go's ``filepath.Clean``: one ``/`` between names, no ``.``, ``..`` resolved lexically."""
    rooted = p.startswith("/")
    out: list[str] = []
    for comp in p.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(comp)
    s = "/".join(out)
    return "/" + s if rooted else s or "."


def _class_char(comp: str, i: int) -> tuple[str, int]:
    """One possibly escaped character of a ``[...]`` class at ``comp[i]``, as Go reads it."""
    n = len(comp)
    if i < n and comp[i] in "-]":
        raise _BadPattern(f"an unescaped {comp[i]!r} inside '[...]'")
    if i < n and comp[i] == "\\":
        i += 1
    if i + 1 >= n:  # Go also wants something after the character: at least the "]"
        raise _BadPattern("'[' without a closing ']'")
    return comp[i], i + 1


def _char_class(comp: str, i: int) -> tuple[str, int]:
    """Regex for the class starting after the ``[`` at ``comp[i - 1]``; and where it ends."""
    if i >= len(comp):
        raise _BadPattern("'[' without a closing ']'")
    negated = comp[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i < len(comp) and comp[i] == "]" and ranges:
            i += 1
            break
        lo, i = _class_char(comp, i)
        hi = lo
        if comp[i] == "-":
            hi, i = _class_char(comp, i + 1)
        ranges.append((lo, hi))
    # Go lets a reversed range match nothing; Python's re rejects it, so leave it out.
    valid = [(lo, hi) for lo, hi in ranges if lo <= hi]
    body = "".join(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else "") for lo, hi in valid)
    if negated:
        return f"[^/{body}]", i
    if not valid:
        return "(?!)", i
    # The regex runs over the whole path: a class must never match the separator.
    guard = "(?!/)" if any(lo <= "/" <= hi for lo, hi in valid) else ""
    return f"{guard}[{body}]", i


def _component_regex(comp: str) -> str:
    """Regex for one component in Go ``filepath.Match`` syntax; raises ``_BadPattern``."""
    out: list[str] = []
    i, n = 0, len(comp)
    while i < n:
        c = comp[i]
        if c == "*":
            while i < n and comp[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise _BadPattern("it ends with an unescaped '\\'")
            out.append(re.escape(comp[i + 1]))
            i += 2
        elif c == "[":
            cls, i = _char_class(comp, i + 1)
            out.append(cls)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _is_simple(comp: str) -> bool:
    return not any(c in comp for c in "\\[]*?")


@dataclass(frozen=True)
class _Compiled:
    negated: bool
    anchored: bool
    literal: str | None  # an unanchored one-component pattern without wildcards
    regex: str  # matched at a component start against the path with a "/" appended


def _compile(pattern: str) -> _Compiled:
    negated = pattern.startswith("!")
    cleaned = _clean(pattern[1:] if negated else pattern)
    anchored = cleaned.startswith("/")
    comps = [c for c in cleaned.split("/") if c]
    # Every component of the subject ends in "/" (see Excluder.path_excluded), so a pattern is
    # a sequence of "X/" pieces, and matching a prefix of the components is matching a parent.
    pieces: list[str] = []
    for comp in comps:
        if comp == "**":
            if not pieces or pieces[-1] != _DSTAR:  # "**/**" is "**", without the backtracking
                pieces.append(_DSTAR)
        else:
            pieces.append(_component_regex(comp) + "/")
    literal = comps[0] if not anchored and len(comps) == 1 and _is_simple(comps[0]) else None
    return _Compiled(negated, anchored, literal, "".join(pieces))


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is malformed (e.g. an unclosed ``[``), or None when it is valid."""
    try:
        _compile(pattern)
    except _BadPattern as e:
        return str(e)
    return None


class _Run:
    """Consecutive patterns of one sign: their matches are simply or-ed."""

    def __init__(self, negated: bool, compiled: list[_Compiled]) -> None:
        self.negated = negated
        self.literals = frozenset(c.literal for c in compiled if c.literal is not None)
        anchored = [c.regex for c in compiled if c.literal is None and c.anchored]
        floating = [c.regex for c in compiled if c.literal is None and not c.anchored]
        alts = []
        if anchored:
            alts.append("/(?:" + "|".join(anchored) + ")")
        if floating:  # ".*/" puts the pattern at the start of any component but the root
            alts.append(".*/(?:" + "|".join(floating) + ")")
        self.regex = re.compile("|".join(alts), re.DOTALL) if alts else None

    def matches(self, s: str) -> bool:
        if self.literals and not self.literals.isdisjoint(s.split("/")):
            return True
        return self.regex is not None and self.regex.match(s) is not None


class _PatternList:
    def __init__(self, patterns: Iterable[str], option: str) -> None:
        runs: list[_Run] = []
        group: list[_Compiled] = []
        for pat in patterns:
            if not pat:
                continue  # restic ignores empty patterns
            try:
                c = _compile(pat)
            except _BadPattern as e:
                raise UsageError(f"invalid {option} pattern {pat!r}: {e}") from None
            if group and group[0].negated != c.negated:
                runs.append(_Run(group[0].negated, group))
                group = []
            group.append(c)
        if group:
            runs.append(_Run(group[0].negated, group))
        while runs and runs[0].negated:  # nothing matched yet: nothing to cancel
            runs.pop(0)
        self.runs = runs

    def matches(self, s: str) -> bool:
        matched = False
        for run in self.runs:
            if run.negated:
                if matched and run.matches(s):
                    matched = False
            elif not matched and run.matches(s):
                matched = True
        return matched


# ---- the excluder ---------------------------------------------------------------------------


def _parse_tag_spec(spec: str) -> tuple[bytes, bytes]:
    name, sep, header = spec.partition(":")
    if not name:
        why = "no file name before ':'" if sep else "the file name is empty"
        raise UsageError(f"invalid --exclude-if-present {spec!r}: {why}")
    return os.fsencode(name), os.fsencode(header)


class Excluder:
    """``ExcludeRules`` compiled once, for the walker to ask about every entry.

    ``warn`` receives one-line messages about tag files that are present but unreadable or
    carry the wrong header (restic warns about these too); they never stop a backup.
    """

    def __init__(self, rules: ExcludeRules, warn: Callable[[str], None] | None = None) -> None:
        self.rules = rules
        self._warn = warn
        plain = _PatternList(rules.patterns, "--exclude")
        folded = _PatternList((p.lower() for p in rules.ipatterns), "--iexclude")
        self._plain = plain if plain.runs else None
        self._folded = folded if folded.runs else None
        self._has_patterns = bool(self._plain or self._folded)
        specs = [_parse_tag_spec(s) for s in rules.if_present]
        if rules.exclude_caches:
            specs.append((CACHEDIR_TAG.encode(), CACHEDIR_SIGNATURE.encode()))
        self._tags = tuple(specs)
        self._limit = rules.larger_than

    @property
    def has_dir_rules(self) -> bool:
        """Whether ``dir_kept`` can ever exclude anything (else the walker may skip it)."""
        return bool(self._tags)

    def path_excluded(self, path: bytes) -> bool:
        """Whether an absolute path is excluded by the patterns (before any lstat).

        A pattern matches a path when it matches the path or one of its parent directories;
        ``!`` patterns then cancel earlier matches. The walker does not descend into an
        excluded directory, so a negation cannot bring back anything below one (as in restic).
        """
        if not self._has_patterns:
            return False
        # The appended "/" ends every component, which is what the compiled patterns expect.
        s = _fsdecode(path) + "/"
        if self._plain is not None and self._plain.matches(s):
            return True
        return self._folded is not None and self._folded.matches(s.lower())

    def dir_kept(self, path: bytes, names: Collection[bytes]) -> frozenset[bytes] | None:
        """For a listed directory: None when its entries are backed up as usual; otherwise
        the only names to keep, restic's way (the directory stays, holding just its tag file).

        A tag file is looked at only when its name is among ``names``; its header is read
        only when the rule has one. Two rules with different tag files that both fire
        keep nothing, as in restic, where each rule rejects every name but its own.
        """
        if not self._tags:
            return None
        fired: set[bytes] = set()
        for name, header in self._tags:
            if self._tag_present(path, name, header, names):
                fired.add(name)
        if not fired:
            return None
        return frozenset(fired) if len(fired) == 1 else frozenset()

    def dir_excluded(self, path: bytes, names: Collection[bytes]) -> bool:
        """Whether the contents of a listed directory are excluded by a tag file rule.

        When True, restic keeps the directory and its tag file: ``dir_kept`` gives the names.
        """
        return self.dir_kept(path, names) is not None

    def size_excluded(self, size: int) -> bool:
        """Whether ``--exclude-larger-than`` drops a non-directory entry of this size."""
        return self._limit is not None and size > self._limit

    def _tag_present(
        self, path: bytes, name: bytes, header: bytes, names: Collection[bytes]
    ) -> bool:
        first = name.split(b"/", 1)[0]  # restic joins the name to the directory: "a/b" works
        if first not in names:
            return False
        tag = path.rstrip(b"/") + b"/" + name
        try:
            if first != name:
                os.lstat(tag)
            if not header:
                return True
            fd = os.open(tag, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                # A FIFO or device under the tag's name must not block or be read from.
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    self._say(f"exclusion tag file {_fsdecode(tag)} is not a regular file")
                    return False
                data = b""
                while len(data) < len(header):
                    chunk = os.read(fd, len(header) - len(data))
                    if not chunk:
                        break
                    data += chunk
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except OSError as e:
            self._say(f"cannot read exclusion tag file {_fsdecode(tag)}: {e.strerror or e}")
            return False
        if data != header:
            short = " (too short)" if len(data) < len(header) else ""
            self._say(f"invalid signature{short} in exclusion tag file {_fsdecode(tag)}")
            return False
        return True

    def _say(self, msg: str) -> None:
        if self._warn is not None:
            self._warn(msg)


# ---- sizes, environment, files --------------------------------------------------------------


def parse_size(text: str) -> int:
    """restic's size syntax: bytes, or a suffix b, k, m, g, t (either case) for powers of 1024."""
    m = _SIZE.fullmatch(text)
    value = int(m.group(1)) * _UNITS[m.group(2).lower()] if m else -1
    if not m or value < 0 or value > _INT64_MAX:
        raise UsageError(
            f"invalid --exclude-larger-than {text!r}: give a size in bytes, optionally with "
            "a suffix k, M, G or T (powers of 1024)"
        )
    return value


def _shell_name(s: str) -> tuple[str, int]:
    """Go's ``os`` getShellName: the variable name at the start of s, and the chars it uses."""
    special = "*#$@!?-0123456789"
    if s[0] == "{":
        if len(s) > 2 and s[1] in special and s[2] == "}":
            return s[1], 3
        end = s.find("}", 1)
        if end == 1:
            return "", 2  # "${}": bad syntax, eaten
        if end < 0:
            return "", 1  # "${" without "}": bad syntax, eaten
        return s[1:end], end + 1
    if s[0] in special:
        return s[0], 1
    i = 0
    while i < len(s) and (s[i] == "_" or (s[i].isascii() and s[i].isalnum())):
        i += 1
    return s[:i], i


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """``$VAR`` and ``${VAR}`` as Go's ``os.Expand`` with restic's mapping: ``$$`` is ``$``,
    an unset variable is empty, a ``$`` before anything that is no name stays as it is."""
    environ: Mapping[str, str] = os.environ if env is None else env
    out: list[str] = []
    i = j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, width = _shell_name(text[j + 1 :])
            if name == "$":
                out.append("$")
            elif name:
                out.append(environ.get(name, ""))
            elif width == 0:
                out.append("$")
            j += width
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out)


def _read(path: str, what: str, stdin: BinaryIO | None = None, dash: bool = True) -> bytes:
    """The bytes of a list file; ``-`` is standard input where restic allows it (``dash``)."""
    try:
        if dash and path == "-":
            return (stdin or sys.stdin.buffer).read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _text_lines(data: bytes) -> list[str]:
    """Lines as restic reads a text file: BOMs dropped (UTF-16 with a BOM decoded), split at
    newlines with one trailing CR removed; bytes that are not UTF-8 kept (surrogateescape)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    elif data.startswith((b"\xfe\xff", b"\xff\xfe")):
        text = data.decode("utf-16", "replace")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        return [line.removesuffix("\r") for line in lines]
    blines = data.split(b"\n")
    if blines[-1] == b"":
        blines.pop()
    return [_fsdecode(line.removesuffix(b"\r")) for line in blines]


def read_exclude_file(path: str, option: str = "--exclude-file") -> list[str]:
    """The patterns of an exclude file: lines trimmed, empty lines and ``#`` lines skipped,
    environment variables expanded; raises UsageError for an unreadable file or bad pattern."""
    patterns: list[str] = []
    for number, line in enumerate(_text_lines(_read(path, option, dash=False)), 1):
        line = line.strip(_SPACE)
        if not line or line.startswith("#"):
            continue
        pattern = expand_env(line)
        why = pattern_error(pattern)
        if why is not None:
            raise UsageError(f"{option} {path} line {number}: invalid pattern {pattern!r}: {why}")
        patterns.append(pattern)
    return patterns


def read_files_from(
    path: str,
    warn: Callable[[str], None] | None = None,
    stdin: BinaryIO | None = None,
) -> list[str]:
    """``--files-from``: one path or glob per line (trimmed; empty and ``#`` lines skipped),
    each expanded like Go's ``filepath.Glob``. A glob that matches nothing is skipped with a
    warning; a malformed one is a UsageError. ``-`` reads standard input."""
    out: list[str] = []
    for number, line in enumerate(_text_lines(_read(path, "--files-from", stdin)), 1):
        line = line.strip(_SPACE)
        if not line or line.startswith("#"):
            continue
        try:
            found = _glob(line)
        except _BadPattern as e:
            raise UsageError(
                f"--files-from {path} line {number}: invalid pattern {line!r}: {e}"
            ) from None
        if not found and warn is not None:
            warn(f"pattern {line!r} in {path} does not match any files, skipping")
        out.extend(found)
    return out


def read_files_from_verbatim(path: str, stdin: BinaryIO | None = None) -> list[str]:
    """``--files-from-verbatim``: one literal path per line; only empty lines are skipped."""
    return [line for line in _text_lines(_read(path, "--files-from-verbatim", stdin)) if line]


def read_files_from_raw(path: str, stdin: BinaryIO | None = None) -> list[str]:
    """``--files-from-raw``: literal paths, each terminated by a NUL byte."""
    data = _read(path, "--files-from-raw", stdin)
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise UsageError(f"--files-from-raw {path}: the last name lacks its terminating NUL byte")
    names = data[:-1].split(b"\0")
    if b"" in names:
        # An empty name would become "." further on: never what the list's author meant.
        raise UsageError(f"--files-from-raw {path}: entry {names.index(b'') + 1} is empty")
    return [_fsdecode(n) for n in names]


# ---- Go's filepath.Glob ---------------------------------------------------------------------


def _has_meta(s: str) -> bool:
    return any(c in s for c in "*?[\\")


def _glob(pattern: str) -> list[str]:
    """Go's ``filepath.Glob``: hidden names are matched too, ``**`` is just ``*``, results are
    sorted per directory, file-system errors are ignored; raises ``_BadPattern``."""
    for comp in pattern.split("/"):
        _component_regex(comp)  # the whole pattern is checked, as newer Go versions do
    if not _has_meta(pattern):
        try:
            os.lstat(pattern)
        except (OSError, ValueError):
            return []
        return [pattern]
    head, _, tail = pattern.rpartition("/")
    directory = "." if not head and not pattern.startswith("/") else head or "/"
    if not _has_meta(directory):
        return _glob_in(directory, tail)
    out: list[str] = []
    for d in _glob(directory):
        out.extend(_glob_in(d, tail))
    return out


def _glob_in(directory: str, pattern: str) -> list[str]:
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return []
        names = os.listdir(directory)
    except (OSError, ValueError):
        return []
    rx = re.compile(_component_regex(pattern), re.DOTALL)
    return [
        _clean(directory + "/" + n)
        for n in sorted(names, key=os.fsencode)  # Go sorts bytes
        if rx.fullmatch(n)
    ]
