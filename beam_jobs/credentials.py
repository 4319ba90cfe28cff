"""Google Cloud credentials, looked up once, before any lock or client.

Beam looks credentials up itself the first time it touches Cloud Storage or Dataflow, retrying
with back-off for about 20 s and printing a traceback per attempt before it goes on anonymously;
a user without credentials then sees a wall of text and, later, an unrelated failure. The launcher
asks ``google.auth`` once instead: none found is one line with the command that fixes it, and what
was found is handed to Beam so that it never looks again. Against the Cloud Storage emulator
(``STORAGE_EMULATOR_HOST``, as Google's clients honour it) Beam is told to be anonymous.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from beam_jobs.options import UsageError
from pipeline.locations import is_gcs

logger = logging.getLogger(__name__)

FIX = "gcloud auth application-default login"


def emulated() -> bool:
    return bool(os.environ.get("STORAGE_EMULATOR_HOST"))


def prepare_credentials(*, what: str, for_beam: bool = True) -> None:
    """Make sure Google Cloud credentials exist for ``what`` (e.g. "the gs:// output") and give
    them to Beam; a :class:`UsageError` naming the fix when there are none."""
    if emulated() and for_beam:
        _give_beam(None)
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=_beam_scopes())
    except DefaultCredentialsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{what} needs Google Cloud credentials and none were found ({first}); run `{FIX}`"
        ) from exc
    _give_beam(credentials)


def _beam_scopes() -> list[str]:
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    return list(GoogleCloudOptions.OAUTH_SCOPES)


def _give_beam(credentials: Any | None) -> None:
    """Settle Beam's process-wide credentials (its own cache), so it never runs its retrying lookup."""
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = (
            None if credentials is None else auth._ApitoolsCredentialsAdapter(credentials)
        )
        auth._Credentials._credentials_init = True


def needs_credentials(*paths: str | None) -> bool:
    """Whether any of ``paths`` (output, cohort, model) lives on Cloud Storage."""
    return any(is_gcs(p) for p in paths)


_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
"""A Google Cloud project id: 6 to 30 lower-case letters, digits and hyphens, starting with a letter
(``example.com:my-project`` for domain-scoped projects)."""


def check_project(project: str | None) -> None:
    if project is not None and not _PROJECT.fullmatch(project):
        raise UsageError(f"project {project!r} is not a Google Cloud project id")
