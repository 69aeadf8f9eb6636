"""Airflow DAG for Connectif: contacts and products, then purchases (Connectif refuses a purchase whose
contact or products it does not know); new coupon codes into their coupon sets. Every task draws on the
account's one bucket of 100 requests/minute."""

from airflow.sdk import Param

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.connectif import (
    ConnectifContactsOperator,
    ConnectifCouponsOperator,
    ConnectifProductsOperator,
    ConnectifPurchasesOperator,
)

dag = build_sync_dag(
    dag_id="connectif_sync",
    destination="connectif",
    vendor_conn_id="connectif_default",
    pool="connectif_default",
    syncs=[
        Sync("contacts", ConnectifContactsOperator),
        Sync("products", ConnectifProductsOperator),
        Sync("purchases", ConnectifPurchasesOperator, after=("contacts", "products")),
        Sync("coupons", ConnectifCouponsOperator),
    ],
    extra_params={
        "historical_import": Param(
            False,
            type="boolean",
            description="Send purchases with triggerPurchaseEvent=false (backfill runs do).",
        ),
    },
    doc_md=__doc__,
)
