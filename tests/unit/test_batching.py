"""Batches are measured on the bytes the vendor receives: the size a batch is cut at is the size of the
body the hook sends (JSON arrays for Voucherify, CSV files for Connectif imports), to the byte."""

from __future__ import annotations

import itertools
import json
import random

from reverse_etl.batching import Batcher, CsvSize, JsonArraySize, json_array
from reverse_etl.hooks.voucherify import compact_json
from reverse_etl.ledger import UPSERT, Planned
from reverse_etl.operators.connectif import ConnectifContactsOperator
from reverse_etl.payload import canonical_json

TEXTS = ["Łódź", "Zürich", "北京", 'O\'Brien; "Jr"', "a,b", "line\nbreak", "", " ", "plain", "emoji 🎉"]


def customers(n: int, seed: int = 1) -> list[Planned]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        payload = {
            "source_id": f"c{i}",
            "name": rng.choice(TEXTS) * rng.randint(1, 5),
            "address": {"city": rng.choice(TEXTS)},
            "metadata": {"points": rng.randint(0, 10**6), "ratio": rng.random(), "vip": rng.random() < 0.5},
        }
        if rng.random() < 0.3:
            payload["tags"] = [rng.choice(TEXTS) for _ in range(3)]
        records.append(Planned(f"c{i}", UPSERT, "h", canonical_json(payload)))
    return records


def test_a_json_batch_measures_the_exact_body_the_hook_sends():
    records = customers(300)
    for n in (1, 2, 17, 300):
        size = JsonArraySize()
        for record in records[:n]:
            size.add(record)
        body = json_array([r.payload for r in records[:n]])
        assert size.total == len(body)
        # The same bytes as the hook's own encoding of the objects: compact JSON in UTF-8, not \\u escapes.
        assert body == compact_json([json.loads(r.payload) for r in records[:n]])


def test_a_csv_import_measures_the_exact_file_connectif_gets():
    op = ConnectifContactsOperator(task_id="load", manifest={})
    rng = random.Random(2)
    records = []
    for i in range(400):  # fields vary per contact: the file's columns grow as the batch does
        fields = {
            "_name": rng.choice(TEXTS),
            "_points": rng.randint(0, 99),
            "tags": [rng.choice(TEXTS), "x"],
            f"custom{rng.randint(0, 30)}": rng.choice(TEXTS),
        }
        records.append(Planned(f"p{i}@example.com", UPSERT, "h", canonical_json(fields)))
    for delimiter in (";", ","):
        size = CsvSize(op.csv_cells, delimiter)
        for n, record in enumerate(records, 1):
            expected = size.size_with(record)
            size.add(record)
            assert size.total == expected
            if n in (1, 2, 50, 400):
                assert size.total == len(op.to_csv(records[:n], delimiter)), (delimiter, n)


def test_batches_stay_under_the_cap_and_fill_it():
    records = customers(2000)
    cap = 20_000
    batcher = Batcher(None, cap, JsonArraySize)
    batches = [full for r in records if (full := batcher.add(r))]
    batches += list(batcher.rest())
    assert [r.key for b in batches for r in b] == [r.key for r in records]  # every record once, in order
    sizes = [len(json_array([r.payload for r in b])) for b in batches]
    assert max(sizes) <= cap
    # Cut only when the next record would not fit.
    for batch, following in itertools.pairwise(batches):
        assert len(json_array([r.payload for r in [*batch, following[0]]])) > cap


def test_count_cap_groups_and_an_oversized_record():
    records = customers(10)
    big = Planned("big", UPSERT, "h", json.dumps({"source_id": "big", "note": "x" * 500}))
    batcher = Batcher(3, 400, JsonArraySize, group=lambda r: "odd" if r.key[-1] in "13579" else "even")
    closed = [full for r in [*records, big] if (full := batcher.add(r))]
    closed += list(batcher.rest())
    assert all(len(b) <= 3 for b in closed)
    assert all(len({r.key[-1] in "13579" for r in b if r.key != "big"}) <= 1 for b in closed)
    assert [b for b in closed if any(r.key == "big" for r in b)] == [[big]]  # alone: over the cap by itself
