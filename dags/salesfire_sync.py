"""Airflow DAG for Salesfire: customers, one signed request each, into the list their SQL mapping names."""

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.salesfire import SalesfireCustomersOperator

dag = build_sync_dag(
    dag_id="salesfire_sync",
    description="Syncs customers from the warehouse to Salesfire.",
    destination="salesfire",
    vendor_conn_id="salesfire_default",
    pool="salesfire_default",
    syncs=[Sync("customers", SalesfireCustomersOperator)],
    doc_md=__doc__,
)
