"""Airflow DAG for SALESmanago through Data Talks: contacts (upserts, and deletes of the contacts this
pipeline sent), products (arrays), then external events (purchases, carts, visits... each sent once with
its externalId), once their contacts exist."""

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.salesmanago import (
    SalesmanagoContactsOperator,
    SalesmanagoEventsOperator,
    SalesmanagoProductsOperator,
)

dag = build_sync_dag(
    dag_id="salesmanago_sync",
    description="Syncs contacts, products and events from the warehouse to SALESmanago through Data Talks.",
    destination="salesmanago",
    vendor_conn_id="salesmanago_default",
    pool="salesmanago_default",
    syncs=[
        Sync("contacts", SalesmanagoContactsOperator),
        Sync("products", SalesmanagoProductsOperator),
        Sync("events", SalesmanagoEventsOperator, after=("contacts",)),
    ],
    doc_md=__doc__,
)
