"""The Celery app the production profile's workers run (``celery -A ml_assets.celery_worker``).

dagster-celery's own ``dagster_celery.app`` reads its broker from a generated config module;
this one takes it from the settings (``ML_ASSETS_CELERY_BROKER``, ``ML_ASSETS_CELERY_BACKEND``),
the same ones :func:`ml_assets.execution.executor` gives the jobs, so the run worker that
submits a step and the worker that takes it always meet on one broker. Importing this module
imports the settings, which applies the profile (:func:`ml_assets.settings.apply_profile`).
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Queue

from ml_assets import settings

_s = settings.current()
app = make_app(
    CeleryExecutor.for_cli(
        broker=_s.celery_broker,
        backend=_s.celery_backend,
        config_source={"task_default_queue": _s.celery_queue},
    ).app_args()
)
# The deployment's own queue (ML_ASSETS_CELERY_QUEUE), declared as dagster-celery declares its
# default one (with priorities): two deployments on one broker never take each other's steps.
app.conf.task_queues = [
    Queue(
        _s.celery_queue,
        routing_key=f"{_s.celery_queue}.#",
        queue_arguments={"x-max-priority": 10},
    )
]
app.conf.worker_prefetch_multiplier = 1  # a worker takes one step at a time
execute_plan = create_task(app)
