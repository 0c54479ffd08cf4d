# A Beam SDK worker image with this package and its exact dependencies installed, so that the
# cluster's workers do not pip-install TensorFlow on every start (which `--extra_package` would do).
#
#   python -m build --sdist                                   # dist/pcam-0.1.0.tar.gz
#   docker build -f docker/beam-worker.Dockerfile -t REGISTRY/pcam-beam-worker:0.1.0 .
#   docker push REGISTRY/pcam-beam-worker:0.1.0
#
# then run a job with --environment_type=DOCKER --environment_config=REGISTRY/pcam-beam-worker:0.1.0
# (Flink/Spark), or --sdk_container_image=REGISTRY/pcam-beam-worker:0.1.0 (Dataflow). The Beam and
# Python versions of this base image must match the submitting environment's (constraints.txt).
FROM apache/beam_python3.11_sdk:2.77.0

COPY constraints.txt /tmp/pcam/constraints.txt
COPY dist/pcam-0.1.0.tar.gz /tmp/pcam/
RUN pip install --no-cache-dir -c /tmp/pcam/constraints.txt "/tmp/pcam/pcam-0.1.0.tar.gz[gcp,aws]" \
    && rm -rf /tmp/pcam

# The base image's entrypoint (/opt/apache/beam/boot) starts the SDK harness; keep it.
