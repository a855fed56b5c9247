"""Bake-time messages: a bad answer prints one line per problem (hooks/pre_gen_project.py), not a traceback.

cookiecutter logs a failed hook with `logger.exception`, which prints the hook runner's traceback before its own
one-line summary. This Jinja2 extension (cookiecutter.json `_extensions`, loaded from the template folder before
any hook runs) adds a logging filter that keeps that log line and drops the traceback: the hook already said
what is wrong and how to fix it. It renders nothing.
"""

import logging

from jinja2.ext import Extension

HOOK_FAILED = "Stopping generation because"


class _WithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(HOOK_FAILED):
            record.msg = "The project was not created: fix the answers listed above and run cookiecutter again."
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


class QuietHookFailure(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        hooks_logger = logging.getLogger("cookiecutter.hooks")
        if not any(isinstance(f, _WithoutTraceback) for f in hooks_logger.filters):
            hooks_logger.addFilter(_WithoutTraceback())
