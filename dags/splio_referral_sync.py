"""Airflow DAG for Splio Referral: each day the referral contacts that changed go to Splio's SFTP server
as a CSV file (split into parts of at most 200,000 lines), uploaded under a temporary name and renamed when
complete. A rerun of a window replaces that window's file."""

from reverse_etl.dag_factory import Sync, build_sync_dag
from reverse_etl.operators.splio import SplioReferralUploadOperator

dag = build_sync_dag(
    dag_id="splio_referral_sync",
    description="Uploads changed referral contacts from the warehouse to Splio Referral's SFTP server as CSV.",
    destination="splio_referral",
    vendor_conn_id="splio_referral_default",
    pool="splio_referral_default",
    syncs=[Sync("referral_contacts", SplioReferralUploadOperator)],
    doc_md=__doc__,
)
