"""Compiled template code kept between renders and between runs, in Jinja's own bytecode cache.

Copier compiles every part of every path, and every file, afresh; compiling is about a third of a
render. Within one render each source compiles once (an LRU); across renders and processes
(`copier update` renders two versions, the tests hundreds of projects) the code is read from
Jinja's FileSystemBytecodeCache in its per-user temporary directory (created 0700, its owner
checked). An entry is keyed on the source, the template's name and everything of the
environment that changes the compiled code, so a new Jinja, Copier or `_envops` never reads an
old entry. DEPLOYMENT_PATTERNS_COMPILE_CACHE=off compiles afresh in every run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import sys
import types
from typing import Any

import jinja2
from jinja2.bccache import FileSystemBytecodeCache

SWITCH = "DEPLOYMENT_PATTERNS_COMPILE_CACHE"


def _disk_cache() -> FileSystemBytecodeCache | None:
    if os.environ.get(SWITCH, "").strip().lower() == "off":
        return None
    try:
        return FileSystemBytecodeCache(pattern="deployment-patterns-%s.cache")
    except (OSError, RuntimeError):  # no safe temporary directory: compile in memory only
        return None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def fingerprint(environment: jinja2.Environment) -> str:
    """What, besides the source and name, decides the code Jinja compiles in `environment`."""
    lexer = [getattr(environment, option) for option in (
        "block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
        "comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix",
        "trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "is_async")]
    finalize = environment.finalize
    return repr([
        sys.version, jinja2.__version__, _version("copier"), _version("copier-template-extensions"),
        f"{type(environment).__module__}.{type(environment).__qualname__}",
        lexer, repr(environment.autoescape) if isinstance(environment.autoescape, bool) else "callable",
        getattr(finalize, "__qualname__", repr(finalize)),
        sorted(f"{type(ext).__module__}.{type(ext).__qualname__}" for ext in environment.extensions.values()),
    ])


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    """`code` (and the functions in it) as compiled from `filename`: a cached entry was compiled in
    another clone of the template, whose path tracebacks would otherwise show."""
    consts = tuple(_with_filename(const, filename) if isinstance(const, types.CodeType) else const
                   for const in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def compiled_once(environment: jinja2.Environment):
    """A replacement for environment.compile: each source compiled once per render, and read from
    the disk cache when an earlier run compiled it. The extensions' preprocess hooks still run for
    each compilation (Copier's yield tag resets its state there)."""
    compile_source = environment.compile
    disk = _disk_cache()

    @functools.cache
    def _fingerprint() -> str:
        return fingerprint(environment)

    @functools.lru_cache(maxsize=4096)
    def cached(source: str, name: str | None, filename: str | None, defer_init: bool) -> Any:
        bucket = None
        if disk is not None:
            # The fingerprint is taken at the first compilation: the extensions are loaded by then.
            key = hashlib.sha256(repr((_fingerprint(), name, defer_init, source)).encode()).hexdigest()
            try:
                bucket = disk.get_bucket(environment, key, None, source)
            except OSError:
                pass
        if bucket is not None and bucket.code is not None:
            return _with_filename(bucket.code, filename or "<template>")
        code = compile_source(source, name, filename, False, defer_init)
        if bucket is not None:
            bucket.code = code
            try:
                disk.set_bucket(bucket)
            except OSError:
                pass
        return code

    def compile_(source, name=None, filename=None, raw=False, defer_init=False):
        if raw or not isinstance(source, str):
            return compile_source(source, name, filename, raw, defer_init)
        environment.preprocess(source, name, filename)
        return cached(source, name, filename, defer_init)

    return compile_
