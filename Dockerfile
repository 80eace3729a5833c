# The wapipe services (ingress, worker, sink, sandbox) share one image; compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wapipe wapipe
COPY producers producers
COPY processors processors
COPY connectors connectors
COPY sinks sinks
COPY schemas schemas
COPY kafka kafka
RUN pip install --no-cache-dir '.[s3]'   # boto3: S3-compatible media storage
ENTRYPOINT ["wapipe"]
