"""Copier's entry points into the extension (copier.yml `_jinja_extensions`): the filters that
validators and templates call, and `dp`, the derived settings of model.derive(), in every file's
context. The package's modules, by concern:

    answers.py       validators and filters on answers
    catalogue.py     images and tools with their pins, runtimes, databases, proxies, sizes
    environments.py  every per-environment policy (PROFILES)
    services.py      the service model (Service) and its YAML rendering
    model.py         derive(answers): the services and facts of one project
    compile_cache.py compiled templates kept between renders and runs
    compliance.py    the controls scripts/audit.sh checks, and each service's exemptions
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from copier_template_extensions import ContextHook
from jinja2.ext import Extension

HERE = Path(__file__).resolve().parent


def _package() -> str:
    """This directory as a package of its own. Copier loads this file by path, and `copier update`
    renders two versions of the template in one process: the name is unique per directory."""
    name = "_deployment_patterns_" + hashlib.sha256(str(HERE).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "__init__.py", submodule_search_locations=[str(HERE)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return name


_PACKAGE = _package()
answers = importlib.import_module(f"{_PACKAGE}.answers")
catalogue = importlib.import_module(f"{_PACKAGE}.catalogue")
compile_cache = importlib.import_module(f"{_PACKAGE}.compile_cache")
model = importlib.import_module(f"{_PACKAGE}.model")
services = importlib.import_module(f"{_PACKAGE}.services")

_COPIER_YML = yaml.load((HERE.parent / "copier.yml").read_text(), Loader=services.SAFE_LOADER)
# The question names: the whole answer set is the cache key of derive().
QUESTIONS = [key for key in _COPIER_YML if not key.startswith("_")]
# Questions asked whatever the other answers are: derive() runs once they all are answered.
ALWAYS_ASKED = [key for key in QUESTIONS if "when" not in _COPIER_YML[key]]


def comment(text: str, indent: int = 0) -> str:
    """Lines of text as YAML/shell comments at `indent` spaces."""
    return "\n".join(" " * indent + ("# " + line).rstrip() for line in text.splitlines())


class DeploymentExtension(Extension):
    """Filters for validators and templates, and the per-runtime defaults copier.yml reads."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.compile = compile_cache.compiled_once(environment)
        environment.filters.update(
            slugify=answers.slugify,
            slug_error=answers.slug_error,
            port_error=answers.port_error,
            command_error=answers.command_error,
            url_path_error=answers.url_path_error,
            image_error=answers.image_error,
            domain_error=answers.domain_error,
            k8s_name_error=answers.k8s_name_error,
            object_store_error=answers.object_store_error,
            endpoint_error=answers.endpoint_error,
            acme_email_error=answers.acme_email_error,
            email_error=answers.email_error,
            smarthost_error=answers.smarthost_error,
            cpus_error=answers.cpus_error,
            memory_error=answers.memory_error,
            exec_form=answers.exec_form,
            json=json.dumps,
            shell_quote=shlex.quote,
            to_yaml=services.to_yaml,
            to_manifests=services.to_manifests,
            comment=comment,
        )
        environment.globals.update(runtime_defaults=catalogue.RUNTIMES)


@functools.lru_cache(maxsize=32)
def _derive_cached(key: str) -> dict[str, Any]:
    return model.derive(json.loads(key))


class DeploymentContext(ContextHook):
    """Adds `dp` (model.derive()) to the context of every rendered file. The hook runs for every
    file and path: the result is cached on the whole answer set."""

    def hook(self, context: dict[str, Any]) -> None:
        # Questions are rendered before every answer exists; `in` does not make Copier ask one.
        if not all(name in context for name in ALWAYS_ASKED):
            return
        key = json.dumps({name: context.get(name) for name in QUESTIONS}, sort_keys=True, default=list)
        try:
            context["dp"] = _derive_cached(key)
        except (ValueError, TypeError, KeyError, AttributeError):
            # An answer still being validated: its validator reports it, files are not rendered.
            pass
