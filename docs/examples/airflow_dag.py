"""An Airflow DAG that runs segflow nightly (docs/scheduling.md).

segflow's exit code says whether a retry can help: 4 (storage, network, another run holding the
output) is retried with a growing delay; 1, 2, 3 and 130 (a failed run, an invalid pipeline,
data that failed its checks, an interruption) fail the task at once, without retries, for a
person to look at. A run that fails has published nothing, so a retry is always safe.
"""

import subprocess
from datetime import datetime, timedelta

from airflow.decorators import dag, task
from airflow.exceptions import AirflowException, AirflowFailException

TRANSIENT = 4


@dag(
    dag_id="customer_segmentation",
    start_date=datetime(2026, 1, 1),
    schedule="0 3 * * *",
    catchup=False,
    max_active_runs=1,
)
def customer_segmentation():
    @task(
        retries=5,
        retry_delay=timedelta(minutes=2),
        retry_exponential_backoff=True,
        # On a timeout Airflow sends SIGTERM: segflow stops, writes its manifest, exits 130.
        execution_timeout=timedelta(hours=2),
    )
    def segflow_run(ds=None):
        # JSON log lines go to the task log as they come; the summary to stdout.
        code = subprocess.run(
            [
                "segflow", "run", "/opt/segflow/pipelines/customer_segmentation.yaml",
                "--var", f"input=s3://crm-drop/{ds}",
                "--var", "output=s3://analytics/segments",
                "--var", f"as_of={ds}",
                "--log-format", "json",
                "--wait",
            ],
        ).returncode
        if code == TRANSIENT:
            raise AirflowException("segflow exited 4 (transient): retrying")
        if code != 0:
            # AirflowFailException fails the task without using its retries.
            raise AirflowFailException(f"segflow exited {code}: not retryable, see the log")

    segflow_run()


customer_segmentation()
