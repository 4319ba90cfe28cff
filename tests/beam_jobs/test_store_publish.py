"""Publishing streams the stored results: bounded memory, the same tables, nothing half-done."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_jobs import publish as publish_module
from beam_jobs.publish import (
    PublishRequest,
    ResultMissing,
    RunFailed,
    iter_results,
    publish,
    publish_run,
    read_table,
)
from beam_jobs.store import KeptResult, ResultStore
from pipeline.enums import SeriesStatus
from pipeline.outputs.layout import TABLE_FILE
from pipeline.outputs.rows import OutcomeRows
from pipeline.outputs.schemas import TABLES, to_table
from tests.support.results import synthetic_outcome


def _stored(out: Path, n: int, n_nodes: int = 9) -> tuple[ResultStore, list[OutcomeRows]]:
    store = ResultStore(str(out), "k")
    results = [synthetic_outcome(i, n_nodes=n_nodes + i % 5) for i in range(n)]
    for result in results:
        store.write(KeptResult(result))
    return store, results


def _publish_run(out: Path, results: list[OutcomeRows], store: ResultStore) -> None:
    publish_run(
        PublishRequest(
            output=str(out),
            output_as_given=str(out),
            settings_key=store.key,
            cohort_uids=tuple(_uids(results)),
            model="reference",
            pipeline_version="test",
            started_at="2026-01-01T00:00:00+00:00",
            token="t",
        )
    )


def _uids(results: list[OutcomeRows]) -> list[str]:
    return sorted(str(r.series["ct_series_instance_uid"]) for r in results)


def test_streamed_tables_equal_the_whole_table_in_row_groups(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(publish_module, "ROW_GROUP_ROWS", 40)
    store, results = _stored(tmp_path / "out", 30)
    published = publish(str(tmp_path / "out"), iter_results(store, _uids(results), chunk=7))
    whole = {
        "series": to_table([r.series for r in results], "series"),
        "nodes": to_table([n for r in results for n in r.nodes], "nodes"),
        "errors": to_table([e for r in results for e in r.errors], "errors"),
        "measurements": to_table([], "measurements"),  # no SR among these synthetic results
    }
    for table in TABLES:
        got = read_table(str(tmp_path / "out"), table)
        assert got.equals(whole[table]), table
    nodes_file = pq.ParquetFile(tmp_path / "out" / "nodes" / TABLE_FILE)
    assert nodes_file.metadata.num_row_groups > 5  # written as it came, not held whole
    assert published.rows == {
        "series": 30,
        "nodes": sum(len(r.nodes) for r in results),
        "errors": 0,
        "measurements": 0,
    }
    assert published.n_ok == 30


def test_a_list_in_any_order_publishes_the_same_bytes(tmp_path: Path) -> None:
    store, results = _stored(tmp_path / "out", 12)
    publish(str(tmp_path / "out"), [KeptResult(r) for r in reversed(results)])
    first = {t: (tmp_path / "out" / t / TABLE_FILE).read_bytes() for t in TABLES}
    publish(str(tmp_path / "out"), iter_results(store, _uids(results)))
    assert {t: (tmp_path / "out" / t / TABLE_FILE).read_bytes() for t in TABLES} == first


def test_the_writer_never_holds_a_row_group_more(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(publish_module, "ROW_GROUP_ROWS", 50)
    held = []
    add = publish_module._TableWriter.add

    def watched(self, rows):  # type: ignore[no-untyped-def]
        add(self, rows)
        held.append(len(self.buffer))

    monkeypatch.setattr(publish_module._TableWriter, "add", watched)
    reads = []
    read = ResultStore.read

    def counted(self, uids, **kwargs):  # type: ignore[no-untyped-def]
        uids = list(uids)
        reads.append(len(uids))
        return read(self, uids, **kwargs)

    monkeypatch.setattr(ResultStore, "read", counted)
    listings = []
    listing = ResultStore.listing

    def counted_listing(self):  # type: ignore[no-untyped-def]
        listings.append(1)
        return listing(self)

    monkeypatch.setattr(ResultStore, "listing", counted_listing)
    store, results = _stored(tmp_path / "out", 40, n_nodes=20)
    _publish_run(tmp_path / "out", results, store)
    assert max(held) < 50
    assert max(reads) <= publish_module.PUBLISH_CHUNK_SERIES and sum(reads) == 40
    assert len(listings) == 1  # one listing for the check for missing results and all the chunks


def _previous_tables(out: Path) -> dict[str, bytes]:
    store, results = _stored(out, 3)
    publish(str(out), iter_results(store, _uids(results)))
    return {t: (out / t / TABLE_FILE).read_bytes() for t in TABLES}


def _left_over(out: Path) -> list[str]:
    return [name for t in TABLES for name in os.listdir(out / t) if ".tmp" in name]


def test_an_unreadable_result_mid_stream_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = _previous_tables(out)
    store, results = _stored(out, 100)
    uids = _uids(results)
    Path(store.path(SeriesStatus.OK, uids[80])).write_text("{ torn")
    with pytest.raises(
        RunFailed, match=f"{uids[80]}: its stored result is missing or unreadable.*removed: run again"
    ):
        _publish_run(out, results, store)
    assert uids[80] not in store.done() and len(store.done()) == 99  # the next run redoes it alone
    assert {t: (out / t / TABLE_FILE).read_bytes() for t in TABLES} == before
    assert not _left_over(out) and not (out / "_lnq" / "publish.json").exists()


def test_a_missing_result_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    before = _previous_tables(out)
    store, results = _stored(out, 10)
    os.remove(store.path(SeriesStatus.OK, _uids(results)[4]))
    opened = []
    monkeypatch.setattr(publish_module, "synced_file", lambda path: opened.append(path))
    with pytest.raises(RunFailed, match="1 of 10 cohort rows have no result"):
        _publish_run(out, results, store)
    assert not opened
    assert {t: (out / t / TABLE_FILE).read_bytes() for t in TABLES} == before


def test_results_out_of_order_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = _previous_tables(out)
    results = [synthetic_outcome(i) for i in range(4)]

    def shuffled() -> Iterator[KeptResult]:
        yield from (KeptResult(results[1]), KeptResult(results[0]), KeptResult(results[2]))

    with pytest.raises(ValueError, match="out of order"):
        publish(str(out), shuffled())
    assert {t: (out / t / TABLE_FILE).read_bytes() for t in TABLES} == before
    assert not _left_over(out)


def test_iter_results_names_the_first_missing_series(tmp_path: Path) -> None:
    store, results = _stored(tmp_path / "out", 5)
    uids = _uids(results)
    os.remove(store.path(SeriesStatus.OK, uids[3]))
    got = []
    with pytest.raises(ResultMissing, match=f"{uids[3]}: its stored result is missing or unreadable"):
        for result in iter_results(store, uids, chunk=2):
            got.append(result.uid)
    assert got == uids[:3]


def test_a_result_file_holding_another_series_publishes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = _previous_tables(out)
    store, results = _stored(out, 6)
    uids = _uids(results)
    swapped = Path(store.path(SeriesStatus.OK, uids[2]))
    swapped.write_bytes(Path(store.path(SeriesStatus.OK, uids[3])).read_bytes())
    with pytest.raises(RunFailed, match=f"{uids[2]}: its stored result holds the series '{uids[3]}'"):
        _publish_run(out, results, store)
    assert uids[2] not in store.done() and uids[3] in store.done()
    assert {t: (out / t / TABLE_FILE).read_bytes() for t in TABLES} == before
    assert not _left_over(out)
