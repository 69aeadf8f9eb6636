"""Airflow DAG for Connectif: contacts and products, then purchases (Connectif refuses a purchase whose
contact or products it does not know); new coupon codes into their coupon sets. Every task draws on the
account's one bucket of 100 requests/minute. After the loads, ``export`` brings Connectif's contacts or
activities back into the warehouse when the param or the connection asks for it (skipped otherwise)."""

from airflow.sdk import Param

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.connectif import (
    ConnectifContactsOperator,
    ConnectifCouponsOperator,
    ConnectifExportOperator,
    ConnectifProductsOperator,
    ConnectifPurchasesOperator,
)

dag = build_sync_dag(
    dag_id="connectif_sync",
    description="Syncs contacts, products, purchases and coupons from the warehouse to Connectif, and loads Connectif exports back.",
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
        "exports": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": ["contacts", "activities"]},
            description="Connectif exports to load into the warehouse after the loads; "
            "null: the connection extra 'exports' (none by default).",
        ),
    },
    doc_md=__doc__,
)

with dag:
    export = ConnectifExportOperator(
        task_id="export",
        vendor_conn_id="connectif_default",
        pool="connectif_default",
        trigger_rule="all_done",  # Connectif's data is worth having back even if a load failed
    )
    # A leaf of its own: a failed export fails the run, whatever the report says of the loads.
    [dag.get_task(f"{entity}.load") for entity in ("contacts", "products", "purchases", "coupons")] >> export
