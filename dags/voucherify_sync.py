"""Voucherify: customers and products (bulk async upserts), then orders (live, or historical import)."""

from airflow.sdk import Param

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.voucherify import (
    VoucherifyCustomersOperator,
    VoucherifyOrdersOperator,
    VoucherifyProductsOperator,
)

dag = build_sync_dag(
    dag_id="voucherify_sync",
    description="Syncs customers, products and orders from the warehouse to Voucherify.",
    destination="voucherify",
    vendor_conn_id="voucherify_default",
    pool="voucherify_default",
    syncs=[
        Sync("customers", VoucherifyCustomersOperator),
        Sync("products", VoucherifyProductsOperator),
        Sync("orders", VoucherifyOrdersOperator, after=("customers", "products")),
    ],
    extra_params={
        "historical_import": Param(
            False, type="boolean", description="Send orders through /v1/orders/import (no events fire)."
        ),
    },
    doc_md=__doc__,
)
