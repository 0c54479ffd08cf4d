"""The runner the jobs use on one machine when no `--runner` is given: Beam's FnApiRunner, as the DirectRunner runs it.

    --runner=beam_jobs.local_runner.LocalRunner     (`pipeline_options.LOCAL_RUNNER`, which `with_local_defaults` adds)

Beam 2.77's DirectRunner first tries the Prism runner, which it downloads from GitHub on first use,
and falls back to the FnApiRunner when that fails (always, offline); Beam's own advice for
pipelines that should stay on the FnApiRunner is to name it (apache/beam#34612). Two things differ
from naming `FnApiRunner` directly, both taken from the DirectRunner:

- the pipeline options reach the workers, as the DirectRunner passes them (their log level,
  `--default_sdk_harness_log_level`; filesystem and pickler options);
- in `multi_processing` mode each worker process is `python -m beam_jobs.worker`, Beam's SDK harness
  started with a quiet root logger, so the terminal shows the job's own lines, not each worker's.

Every other mode and runner is Beam's as it is: `--runner=DirectRunner` still gets the DirectRunner.
"""

from __future__ import annotations

import sys

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle

# The worker command the FnApiRunner's multi_processing mode uses, and ours.
BEAM_WORKER = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main"
QUIET_WORKER = f"{sys.executable} -m beam_jobs.worker"


class LocalRunner(fn_runner.FnApiRunner):
    def run_pipeline(self, pipeline, options):
        # As the DirectRunner does before it hands a pipeline to the FnApiRunner.
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        self._provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
        return super().run_pipeline(pipeline, options)

    def run_via_runner_api(self, pipeline_proto, options):
        for env in pipeline_proto.components.environments.values():
            if env.urn == python_urns.SUBPROCESS_SDK and env.payload.decode() == BEAM_WORKER:
                env.payload = QUIET_WORKER.encode()
        return super().run_via_runner_api(pipeline_proto, options)
