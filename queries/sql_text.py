"""The one place where SQL text is put together: table identifiers filled in, the BigQuery cohort built.

Values never go into SQL text (they are bound as query parameters). Table identifiers cannot be
bound, so the SQL names them as ``{placeholder}`` and :func:`fill_identifiers` fills them in after
checking each is ``PROJECT.DATASET.TABLE`` (``{dataset}``: ``PROJECT.DATASET``). The ``lnq`` command
and the scheduled reprocessing on Cloud Composer both use this file. Standard library only: the
scheduler gets it as a plain file, copied with ``queries/bigquery/*.sql`` into ``lnq_sql/`` beside
``lnq_reprocess.py`` (README, "Run on Google Cloud").
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "SERIES_RELATION",
    "bigquery_cohort_sql",
    "dataset_id",
    "fill_identifiers",
    "table_id",
    "with_relation",
]

_PROJECT = r"[A-Za-z0-9][A-Za-z0-9_\-]*"
_NAME = r"[A-Za-z0-9_]+"
_DATASET_ID = re.compile(rf"{_PROJECT}\.{_NAME}")
_TABLE_ID = re.compile(rf"{_PROJECT}\.{_NAME}\.{_NAME}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RELATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The series-level relation lnq_cohort.sql reads, with idc-index's column names: idc-index's
# bundled index offline, idc_series_index.sql over dicom_all on BigQuery.
SERIES_RELATION = "index"


def dataset_id(value: str) -> str:
    """``value`` if it is ``PROJECT.DATASET``; a ValueError otherwise."""
    if not isinstance(value, str) or not _DATASET_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not PROJECT.DATASET")
    return value


def table_id(value: str) -> str:
    """``value`` if it is ``PROJECT.DATASET.TABLE``; a ValueError otherwise."""
    if not isinstance(value, str) or not _TABLE_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not PROJECT.DATASET.TABLE")
    return value


def fill_identifiers(sql: str, **identifiers: str) -> str:
    """``sql`` with each ``{name}`` placeholder replaced by ``identifiers[name]``.

    ``{dataset}`` takes ``PROJECT.DATASET``, every other placeholder ``PROJECT.DATASET.TABLE``;
    anything else is refused before any text is filled, and so is a placeholder left without an
    identifier or an identifier the SQL has no placeholder for.
    """
    wanted = set(_PLACEHOLDER.findall(sql))
    if wanted != set(identifiers):
        raise ValueError(
            f"the SQL has placeholders {sorted(wanted)}; identifiers were given for {sorted(identifiers)}"
        )
    checked = {
        name: dataset_id(value) if name == "dataset" else table_id(value)
        for name, value in identifiers.items()
    }
    return _PLACEHOLDER.sub(lambda m: checked[m.group(1)], sql)


def with_relation(sql: str, name: str, relation: str) -> str:
    """The query ``sql`` (``WITH ...`` after its leading ``--`` comment lines) with one more common
    table expression in front of its own: ``name AS (relation)``."""
    if not _RELATION_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a relation name")
    lines = sql.splitlines()
    code = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("--")]
    start = re.match(r"\s*WITH\s+", lines[code[0]], re.IGNORECASE) if code else None
    if start is None:
        raise ValueError("the query must start with WITH (after its comment lines)")
    first = code[0]
    body = relation.strip().rstrip(";").rstrip()
    own = lines[first][start.end() :]
    return "\n".join([*lines[:first], f"WITH {name} AS (", body, "),", own, *lines[first + 1 :]]) + "\n"


def bigquery_cohort_sql(read: Callable[[str], str]) -> str:
    """The cohort query for BigQuery: ``lnq_cohort.sql`` over the series index that
    ``idc_series_index.sql`` builds from ``dicom_all``. ``read(name)`` gives the text of ``name.sql``
    from ``queries/bigquery/`` (or the deployed ``lnq_sql/``)."""
    return with_relation(read("lnq_cohort"), SERIES_RELATION, read("idc_series_index"))
