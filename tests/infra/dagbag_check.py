"""Run by the Airflow virtual environment: load the DAG folder with DagBag, print what it found as JSON."""

from __future__ import annotations

import json
import sys

from airflow.models import DagBag


def _sql(task: object) -> str | None:
    """The SQL a task runs: a query job's text, or a check operator's."""
    configuration = getattr(task, "configuration", None)
    if isinstance(configuration, dict) and "query" in configuration:
        return configuration["query"]["query"]
    sql = getattr(task, "sql", None)
    return sql if isinstance(sql, str) else None


bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
print(
    json.dumps(
        {
            "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
            "dags": {
                dag_id: {
                    "schedule": str(dag.schedule_interval),
                    "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
                    "operators": {t.task_id: type(t).__name__ for t in dag.tasks},
                    "sql": {t.task_id: _sql(t) for t in dag.tasks if _sql(t) is not None},
                    "params": {k: dag.params[k] for k in dag.params},
                    "retries": {t.task_id: t.retries for t in dag.tasks},
                }
                for dag_id, dag in bag.dags.items()
            },
        }
    )
)
