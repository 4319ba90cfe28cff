"""Strict command lines: our options, Beam's declared options, and nothing else.

A mistyped option (``--modle torchscript:m.pt``) must not be handed to Beam, which
ignores what it does not know, while the run goes on in reference mode. Options
that are neither ours nor declared by one of Beam's ``PipelineOptions`` classes are
refused with a suggestion.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import threading


class UsageError(Exception):
    """A mistake on the command line or in its inputs: one line, exit code 2."""


INTERRUPTED = threading.Event()
"""Set by the CLI's SIGINT/SIGTERM handler: a failure that follows is the interruption's."""


@functools.lru_cache(maxsize=1)
def beam_option_names() -> frozenset[str]:
    """Every ``--option`` that one of Beam's PipelineOptions classes declares."""
    from apache_beam.options.pipeline_options import PipelineOptions

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    names: set[str] = set()
    for cls in subclasses(PipelineOptions):
        parser = argparse.ArgumentParser(add_help=False)
        try:
            cls._add_argparse_args(parser)  # type: ignore[attr-defined]
        except (argparse.ArgumentError, TypeError, AttributeError):
            continue  # a test or plugin class that cannot declare itself here
        for action in parser._actions:
            names.update(o for o in action.option_strings if o.startswith("--"))
    return frozenset(names)


def split_beam_args(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options parsed; the rest returned for Beam only if Beam declares each of them."""
    args, rest = parser.parse_known_args(argv)
    ours = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    known = beam_option_names()
    previous = ""
    for arg in rest:
        if not arg.startswith("--"):
            if arg.startswith("-") or not previous.startswith("--") or "=" in previous:
                raise UsageError(f"unrecognized argument {arg}")
            previous = arg  # the value of the Beam option before it
            continue
        previous = arg
        name = arg.split("=", 1)[0]
        if name not in known:
            close = difflib.get_close_matches(name, ours, n=1) or difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unrecognized option {name}{hint}")
    return args, rest
